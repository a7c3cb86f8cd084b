from __future__ import annotations

import csv
from pathlib import Path

import pytest

from thrifty.errors import InputError, ThriftyError
from thrifty.sim.profiles import ProfileSet, canonical_placement


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_exact_placement_rows_are_returned_as_measured(data_root: Path) -> None:
    profiles = ProfileSet(data_root, "pollux")
    app = profiles.get("cifar10", ("aws",))
    for row in rows(data_root / "pollux/profiles/cifar10/placements.csv")[::97]:
        placement = tuple(int(d) for d in row["placement"])
        step, sync = app.kind("aws").step_time(placement, int(row["local_bsz"]))
        assert step == pytest.approx(float(row["step_time"]))
        assert sync == pytest.approx(float(row["sync_time"]))


def test_placements_compare_as_their_smallest_rotation() -> None:
    assert canonical_placement((4, 1, 2)) == (1, 2, 4)
    assert canonical_placement((2, 0, 1, 4)) == (1, 4, 2)
    assert canonical_placement((0, 0)) == ()


def test_unmeasured_configurations_interpolate_between_neighbours(data_root: Path) -> None:
    kind = ProfileSet(data_root, "pollux").get("cifar10", ("aws",)).kind("aws")
    lo = kind.step_time((4,), 64)
    hi = kind.step_time((4,), 91)
    mid = kind.step_time((4,), 77)
    assert min(lo[0], hi[0]) <= mid[0] <= max(lo[0], hi[0])
    # 5 nodes × 4 GPUs was never run as a placement: interpolated from the scalability runs.
    big = kind.step_time((4, 4, 4, 4, 4), 64)
    assert big is not None and big[0] > kind.step_time((4,), 64)[0]


def test_gradient_statistics_interpolate_linearly_in_batch_size(data_root: Path) -> None:
    app = ProfileSet(data_root, "pollux").get("cifar10", ("aws",))
    v128 = rows(data_root / "pollux/profiles/cifar10/validation-128.csv")
    v256 = rows(data_root / "pollux/profiles/cifar10/validation-256.csv")
    sqr, var = app.grad_stats(192.0, 3)
    assert sqr == pytest.approx((float(v128[3]["grad_sqr"]) + float(v256[3]["grad_sqr"])) / 2)
    assert var == pytest.approx((float(v128[3]["grad_var"]) + float(v256[3]["grad_var"])) / 2)
    assert app.init_batch_size == 128 and app.max_batch_size == 4096
    assert app.epochs == 100


def test_every_application_loads_on_every_kind(data_root: Path) -> None:
    sia = ProfileSet(data_root, "sia")
    assert set(sia.applications) == {"bert", "cifar10", "deepspeech2", "imagenet", "ncf", "yolov3"}
    for name in sia.applications:
        app = sia.get(name, ("aws", "rtx", "dgx-ext"))
        for kind in ("aws", "rtx", "dgx-ext"):
            k = app.kind(kind)
            assert k.step_time((1,), k.min_local_bsz) is not None


def test_unknown_application_and_kind_are_named(data_root: Path) -> None:
    profiles = ProfileSet(data_root, "sia")
    with pytest.raises(ThriftyError, match=r"'resnet9'.*cifar10"):
        profiles.get("resnet9", ("aws",))
    with pytest.raises(ThriftyError, match="'v100'"):
        profiles.get("cifar10", ("aws",)).kind("v100")


def test_missing_or_malformed_profile_files_name_the_file(tmp_path: Path, data_root: Path) -> None:
    root = tmp_path / "data"
    app_dir = root / "pollux" / "profiles" / "tiny"
    app_dir.mkdir(parents=True)
    (app_dir / "validation-8.csv").write_text("progress,iteration,grad_sqr,grad_var\n1,1,1,1\n")
    (app_dir / "placements.csv").write_text(
        "placement,local_bsz,step_time,sync_time\n1,8,0.1,0.0\n1,16,oops,0.0\n"
    )
    with pytest.raises(InputError, match=r"placements.csv:3: field 'step_time'"):
        ProfileSet(root, "pollux").get("tiny", ("aws",))
    (app_dir / "placements.csv").write_text("placement,local_bsz,step_time,sync_time\n1,8,0.1,0\n")
    with pytest.raises(InputError, match=r"scalability.csv: profile file not found"):
        ProfileSet(root, "pollux").get("tiny", ("aws",))


def test_beyond_the_profiled_nodes_the_time_is_held_flat(data_root: Path) -> None:
    """Scaled clusters spread jobs over more nodes than were measured: they must still run."""
    rtx = ProfileSet(data_root, "sia").get("cifar10", ("aws", "dgx-ext", "rtx")).kind("rtx")
    widest = rtx.step_time((8, 8, 8), 64)  # 3 nodes × 8: the largest measured RTX shape
    assert widest is not None
    assert rtx.step_time((8, 8, 8, 8, 8), 64) == widest
    assert rtx.step_time((4, 4, 4, 4, 4, 4), 64) == widest  # 24 GPUs on 6 nodes
    narrower = rtx.step_time((4, 4, 4), 64)  # inside the measurements: interpolated as before
    assert narrower is not None and narrower != widest
