"""The workload generator: what it keeps from the bases, what it scales, and that it repeats."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from thrifty.cli import app
from thrifty.errors import InputError, ThriftyError
from thrifty.sim.cluster import load_cluster
from thrifty.sim.generate import (
    base_stats,
    cluster_toml,
    generate_workload,
    mix,
    parse_duration,
    scale_cluster,
    workload_csv,
)
from thrifty.sim.workload import TraceJob, Workload, load_workload

HEADER = "name,time,application,num_replicas,batch_size\n"
# (application, GPUs, batch) requests and their weights in the synthetic base workloads
REQUESTS = {("cifar10", 2, 256): 6, ("ncf", 1, 32768): 3, ("bert", 4, 12): 1}


def base_workload(seed: int, jobs: int = 200, mean_gap: float = 180.0) -> Workload:
    """A base with a known mix and exponential gaps (CV 1): a stand-in for a measured trace."""
    rng = np.random.default_rng(seed)
    requests = [r for r, w in REQUESTS.items() for _ in range(w)]
    times = np.cumsum(rng.exponential(mean_gap, size=jobs)).round()
    specs = []
    for i, t in enumerate(times):
        app, replicas, batch = requests[rng.integers(len(requests))]
        specs.append(TraceJob(f"b{seed}-{i}", float(t), app, replicas, batch))
    return Workload(f"base{seed}", Path(f"base{seed}.csv"), tuple(specs))


@pytest.fixture(scope="module")
def bases() -> list[Workload]:
    return [base_workload(1), base_workload(2)]


def gaps(workload: Workload) -> np.ndarray:
    return np.diff([j.submit_time for j in workload.jobs])


def test_mix_and_requests_follow_the_bases(bases: list[Workload]) -> None:
    generated = generate_workload(bases, rate_scale=8, jobs=6000, seed=3)
    pooled = Workload("all", Path("all.csv"), tuple(j for b in bases for j in b.jobs))
    expected, got = mix(pooled), mix(generated)
    assert set(got) == set(expected)
    for application, share in expected.items():
        sigma = math.sqrt(share * (1 - share) / len(generated.jobs))
        assert abs(got[application] - share) < 4 * sigma, (application, got[application], share)
    base_requests = {(j.application, j.num_replicas, j.batch_size) for j in pooled.jobs}
    assert {(j.application, j.num_replicas, j.batch_size) for j in generated.jobs} <= (
        base_requests
    )


@pytest.mark.parametrize("rate", [1.0, 4.0, 32.0])
def test_arrival_rate_scales_and_burstiness_is_kept(bases: list[Workload], rate: float) -> None:
    stats = base_stats(bases)
    generated = generate_workload(bases, rate_scale=rate, jobs=8000, seed=5)
    new = gaps(generated)
    # The mean of 8,000 bootstrapped gaps: within 5 standard errors of the base's mean / rate.
    standard_error = stats.gaps.std() / rate / math.sqrt(len(new))
    assert abs(new.mean() - stats.mean_gap / rate) < 5 * standard_error + 1e-3
    base_cv = stats.gaps.std() / stats.gaps.mean()
    assert abs(new.std() / new.mean() - base_cv) < 0.1


def test_duration_bounds_the_arrivals_and_sets_the_count(bases: list[Workload]) -> None:
    stats = base_stats(bases)
    hours = 4 * 3600.0
    generated = generate_workload(bases, rate_scale=16, duration=hours, seed=0)
    times = [j.submit_time for j in generated.jobs]
    assert max(times) <= hours and times == sorted(times)
    expected = hours / (stats.mean_gap / 16)
    assert abs(len(times) - expected) < 6 * math.sqrt(expected)  # about Poisson: gap CV near 1
    default = generate_workload(bases, rate_scale=2, seed=0)  # spans as long as the bases
    assert max(j.submit_time for j in default.jobs) <= stats.span
    assert max(j.submit_time for j in default.jobs) > 0.9 * stats.span


def test_owners_are_resampled_with_their_jobs(tmp_path: Path) -> None:
    owned = Workload("o", Path("o.csv"), tuple(
        TraceJob(f"j{i}", 60.0 * i, "ncf" if i % 2 else "bert", 1, 8, f"u{i % 2}", "lab")
        for i in range(20)
    ))
    generated = generate_workload([owned], jobs=200, seed=1)
    assert {(j.application, j.user) for j in generated.jobs} == {("ncf", "u1"), ("bert", "u0")}
    path = tmp_path / "g.csv"
    path.write_text(workload_csv(generated))
    assert load_workload(path).jobs == generated.jobs


def test_same_seed_same_workload_other_seed_other(bases: list[Workload]) -> None:
    one = workload_csv(generate_workload(bases, rate_scale=4, jobs=500, seed=11))
    assert one == workload_csv(generate_workload(bases, rate_scale=4, jobs=500, seed=11))
    assert one != workload_csv(generate_workload(bases, rate_scale=4, jobs=500, seed=12))


def test_workload_round_trips_through_load_workload(
    tmp_path: Path, bases: list[Workload]
) -> None:
    generated = generate_workload(bases, rate_scale=32, jobs=300, seed=0)
    path = tmp_path / "g.csv"
    path.write_text(workload_csv(generated))
    loaded = load_workload(path, ["bert", "cifar10", "ncf"])
    assert loaded.jobs == generated.jobs
    assert len({j.name for j in loaded.jobs}) == 300


@pytest.mark.parametrize("name", ["pollux64", "sia-hetero64"])
def test_scaled_cluster_keeps_its_settings_and_round_trips(tmp_path: Path, name: str) -> None:
    base = load_cluster(name)
    scaled = scale_cluster(base, 32)
    assert scaled.num_gpus == 32 * base.num_gpus
    for kind in base.kinds:
        count = sum(n.num_gpus for n in base.nodes if n.gpu_kind == kind)
        assert sum(n.num_gpus for n in scaled.nodes if n.gpu_kind == kind) == 32 * count
    path = tmp_path / "c.toml"
    path.write_text(cluster_toml(scaled, comment="a comment\nover two lines"))
    loaded = load_cluster(str(path))
    assert loaded == scaled
    assert loaded.profiles == base.profiles
    for application in ("cifar10", "imagenet", "bert", "other"):
        assert loaded.delay(application) == base.delay(application)
    assert loaded.slowdown == base.slowdown
    assert loaded.local_cap("deepspeech2", "rtx") == base.local_cap("deepspeech2", "rtx")
    assert loaded.local_cap("yolov3", "aws") == base.local_cap("yolov3", "aws")
    assert len({n.name for n in loaded.nodes}) == len(loaded.nodes)


def test_fractional_scale_keeps_every_group() -> None:
    small = scale_cluster(load_cluster("sia-hetero64"), 0.25)
    assert small.kinds == ("aws", "dgx-ext", "rtx")
    assert [sum(n.gpu_kind == k for n in small.nodes) for k in ("aws", "rtx", "dgx-ext")] == [
        2, 1, 1  # round(6/4), then at least one node of each group
    ]


def test_parse_duration() -> None:
    assert parse_duration("8h") == 28800
    assert parse_duration("90m") == 5400
    assert parse_duration("1.5d") == 1.5 * 86400
    assert parse_duration("120") == 120
    for bad in ("8x", "", "-3h", "0"):
        with pytest.raises(ThriftyError, match="--duration"):
            parse_duration(bad)


def test_bad_generator_arguments(bases: list[Workload]) -> None:
    with pytest.raises(ThriftyError, match="either --jobs or --duration"):
        generate_workload(bases, jobs=10, duration=100.0)
    with pytest.raises(ThriftyError, match="--rate-scale"):
        generate_workload(bases, rate_scale=0)
    with pytest.raises(ThriftyError, match="--node-scale"):
        scale_cluster(load_cluster("pollux64"), -1)
    single = Workload("one", Path("one.csv"), (TraceJob("a", 5.0, "ncf", 1, 32768),))
    with pytest.raises(ThriftyError, match=r"one\.csv.*two distinct arrival times"):
        generate_workload([single])


def test_cluster_toml_caps_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[local_bsz_caps.yolov3]\nh100 = 8\n[[nodes]]\nkind = "aws"\n')
    with pytest.raises(InputError, match=r"c\.toml: field 'local_bsz_caps\.yolov3\.h100'"):
        load_cluster(str(path))
    path.write_text('[local_bsz_caps.yolov3]\naws = 0\n[[nodes]]\nkind = "aws"\n')
    with pytest.raises(InputError, match=r"local_bsz_caps\.yolov3\.aws"):
        load_cluster(str(path))


# --- the command ------------------------------------------------------------------------------


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_writes_a_cluster_and_workload_that_simulate_reads(
    tmp_path: Path, data_root: Path
) -> None:
    base = tmp_path / "base.csv"
    base.write_text(workload_csv(base_workload(7, jobs=60)))
    outputs = ("--cluster-out", tmp_path / "c.toml", "--workload-out", tmp_path / "w.csv")
    args = ("workload", "generate", base, "-c", "sia-hetero64", "--node-scale", "4",
            "--duration", "2h", "--seed", "3", "--data", data_root, *outputs)
    code, out, err = invoke(*args)
    assert code == 0, err
    assert "generated" in out
    cluster = load_cluster(str(tmp_path / "c.toml"))
    assert cluster.num_gpus == 256 and cluster.delay("imagenet") == 250
    workload = load_workload(tmp_path / "w.csv", ["bert", "cifar10", "ncf"])
    assert max(j.submit_time for j in workload.jobs) <= 7200
    first = (tmp_path / "w.csv").read_text()
    code, _, err = invoke(*args)  # outputs exist: refused without --force
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    code, _, err = invoke(*args, "--force")
    assert code == 0, err
    assert (tmp_path / "w.csv").read_text() == first


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (("--jobs", "10", "--duration", "1h"), ("either --jobs or --duration",)),
        (("--rate-scale", "0"), ("--rate-scale must be positive",)),
        (("--duration", "soon"), ("--duration", "'soon'")),
    ],
)
def test_cli_bad_options_are_one_line(
    tmp_path: Path, data_root: Path, extra: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    base = tmp_path / "base.csv"
    base.write_text(workload_csv(base_workload(7, jobs=20)))
    code, out, err = invoke(
        "workload", "generate", base, "-c", "pollux64", "--data", data_root,
        "--cluster-out", tmp_path / "c.toml", "--workload-out", tmp_path / "w.csv", *extra,
    )
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "w.csv").exists()


def test_cli_bad_base_row_names_file_line_and_field(tmp_path: Path, data_root: Path) -> None:
    base = tmp_path / "base.csv"
    base.write_text(HEADER + "a,0,ncf,1,32768\nb,10,gpt5,1,8\n")
    code, out, err = invoke(
        "workload", "generate", base, "-c", "pollux64", "--data", data_root,
        "--cluster-out", tmp_path / "c.toml", "--workload-out", tmp_path / "w.csv",
    )
    assert code == 2 and out == ""
    assert "base.csv:3: field 'application'" in err and len(err.strip().splitlines()) == 1
