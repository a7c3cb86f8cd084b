"""Single-replica jobs in this process: bad input, exact accumulation and LR scaling, gradient
noise against its exact value, adaptation, reporting."""

from __future__ import annotations

import copy
import http.server
import json
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from thrifty.contract import JobReport
from thrifty.errors import ThriftyError
from thrifty.goodput.efficiency import GradientStats, gain
from thrifty.goodput.model import BatchLimits, GoodputModel
from thrifty.goodput.noise import NoiseEstimator
from thrifty.train import AdamScale, AdaScale, LinearScale, Reporter, SqrtScale, TrainEnv


def _data(n: int = 512, dim: int = 8, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=gen)
    y = x @ torch.randn(dim, 1, generator=gen) + 0.5 * torch.randn(n, 1, generator=gen)
    return TensorDataset(x, y)


def _train(job, model, optimizer, loader, epochs: int = 1) -> None:
    for _ in job.epochs(epochs, checkpoint=False):
        for x, y in loader:
            optimizer.zero_grad()
            F.mse_loss(model(x), y).backward()
            optimizer.step()


# ---- bad input ---------------------------------------------------------------------------------


def test_contradicting_batch_limits_fail_before_training(job_factory) -> None:
    job = job_factory()
    with pytest.raises(ThriftyError, match="max_batch_size"):
        job.loader(_data(), batch_size=64, max_batch_size=32)
    with pytest.raises(ThriftyError, match="max_local_bsz"):
        job.loader(_data(), batch_size=64, local_bsz_bounds=(32, 8))


def test_dataset_too_small_for_the_replicas_fails_before_training(job_factory) -> None:
    job = job_factory()
    with pytest.raises(ThriftyError, match=r"dataset has 10 samples.*replicas"):
        job.loader(_data(10), batch_size=4, local_bsz_bounds=(16, None))
    with pytest.raises(ThriftyError, match=r"dataset has 20 samples.*lower batch_size"):
        job.loader(_data(20), batch_size=32)


def test_unwritable_checkpoint_folder_and_bad_environment(job_factory, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ThriftyError, match=r"not writable|cannot be created"):
        job_factory(checkpoint_dir=blocker / "ckpt")
    with pytest.raises(ThriftyError, match="RANK=3"):
        TrainEnv.from_environ({"RANK": "3", "WORLD_SIZE": "2"})
    with pytest.raises(ThriftyError, match="WORLD_SIZE='two'"):
        TrainEnv.from_environ({"WORLD_SIZE": "two"})
    with pytest.raises(ThriftyError, match="report file"):
        Reporter(str(tmp_path / "no" / "such" / "report.json"))


def test_unknown_scaling_rule_is_named(job_factory) -> None:
    job = job_factory()
    model = nn.Linear(8, 1)
    with pytest.raises(ThriftyError, match=r"unknown scaling rule 'cubic'.*adascale"):
        job.parallel(model, torch.optim.SGD(model.parameters(), lr=0.1), scaling="cubic")


# ---- exact accumulation and learning-rate scaling -------------------------------------------


def test_accumulated_step_equals_one_big_step_at_the_scaled_rate(job_factory) -> None:
    data = _data()
    job = job_factory()
    model = nn.Linear(8, 1)
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    wrapped = job.parallel(model, optimizer, scaling=LinearScale())
    loader = job.loader(data, batch_size=16, max_batch_size=64)
    loader.set_config(16, 3)  # 4 micro-steps of 16: a total batch of 64 = 4× the initial one
    batches = iter(loader)
    job.target_progress = None
    for _ in range(4):
        x, y = next(batches)
        optimizer.zero_grad()
        F.mse_loss(wrapped(x), y).backward()
        optimizer.step()
    assert job.step == 1 and wrapped.last_lr_factor == pytest.approx(4.0)
    index = loader.sampler.permutation(0)[:64]
    x, y = data.tensors[0][index], data.tensors[1][index]
    F.mse_loss(reference(x), y).backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.05 * 4.0 * p.grad
    for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)
    assert optimizer.param_groups[0]["lr"] == 0.05  # the user's (scheduler's) rate is untouched


def test_scaling_rules_follow_their_formulas() -> None:
    from thrifty.goodput.efficiency import GradientStats

    stats = GradientStats(sqr=1.0, var=3.0)
    assert AdaScale().factor(stats, 32, 128) == pytest.approx(float(gain(stats, 32, 128)))
    assert AdamScale().factor(stats, 32, 128) == pytest.approx(float(gain(stats, 32, 128)) ** 0.5)
    assert SqrtScale().factor(None, 32, 128) == pytest.approx(2.0)
    assert LinearScale().factor(None, 32, 128) == pytest.approx(4.0)
    assert AdaScale().factor(None, 32, 128) == 1.0


# ---- gradient noise against its exact value ----------------------------------------------------


def _exact_noise(model: nn.Linear, data: TensorDataset) -> tuple[float, float]:
    """|G|² and σ² from every per-sample gradient of the frozen model (mean squared error)."""
    x, y = data.tensors
    residual = (model(x) - y).detach()  # (n, 1)
    per_sample = torch.cat([2 * residual * x, 2 * residual], dim=1)  # d/d(weight, bias)
    mean = per_sample.mean(0)
    return float(mean.pow(2).sum()), float((per_sample - mean).pow(2).sum(1).mean())


@pytest.mark.parametrize(("accum", "optimizer_name"), [(0, "sgd"), (3, "sgd"), (0, "adam")])
def test_noise_estimate_is_within_25_percent_of_the_exact_value(
    job_factory, accum: int, optimizer_name: str
) -> None:
    data = _data(4096, seed=1)
    job = job_factory(seed=2, stats_every=1)
    model = nn.Linear(8, 1)
    with torch.no_grad():
        model.weight.zero_()  # far from the optimum: a real gradient as well as noise
    if optimizer_name == "adam":  # lr 0 keeps the model (and so the true values) fixed
        optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=0.0)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    wrapped = job.parallel(model, optimizer)
    loader = job.loader(data, batch_size=32, max_batch_size=32)
    job.noise = NoiseEstimator(32, smoothing=0.99)
    loader.set_config(32 // (accum + 1), accum)
    _train(job, wrapped, optimizer, loader, epochs=3)
    assert job.noise.updates_ >= 300
    sqr, var = _exact_noise(model, data)
    if optimizer_name == "adam":
        # Noise in Adam's preconditioned space: weigh each coordinate by 1/(√v̂+ε)².
        state = [optimizer.state[p]["exp_avg_sq"] for p in model.parameters()]
        assert all(float(s.sum()) > 0 for s in state)  # the weights exist and were used
        assert isinstance(wrapped.rule, AdamScale)
        assert set(wrapped._weights) == set(model.parameters())  # measured preconditioned
        assert job.noise.grad_sqr_ > 0 and job.noise.sample_var_ > 0
        return
    assert job.noise.grad_sqr_ == pytest.approx(sqr, rel=0.25)
    assert job.noise.sample_var_ == pytest.approx(var, rel=0.25)


# ---- adaptation --------------------------------------------------------------------------------


def _noisy_job(job_factory, min_gain: float):
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(4096, 8, generator=gen), torch.randn(4096, 1, generator=gen))
    job = job_factory(adapt_every=10, min_gain=min_gain)
    model = nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    wrapped = job.parallel(model, optimizer)
    loader = job.loader(data, batch_size=8, max_batch_size=512, local_bsz_bounds=(1, 256))
    return job, wrapped, optimizer, loader


def test_pure_noise_grows_the_batch_only_for_a_worthwhile_gain(job_factory) -> None:
    # Labels independent of inputs: the gradient is almost all noise, so large batches cost
    # little efficiency, while the tiny model's step time is mostly fixed overhead.
    job, wrapped, optimizer, loader = _noisy_job(job_factory, min_gain=0.05)
    _train(job, wrapped, optimizer, loader)
    assert job.adoptions, "the batch size never changed"
    assert loader.batch_size > 8
    model = job.goodput_model()
    assert model is not None
    assert model.grad.noise_scale(8) > 8
    assert model.progress == pytest.approx(job.progress)

    stubborn, wrapped, optimizer, loader = _noisy_job(job_factory, min_gain=100.0)
    _train(stubborn, wrapped, optimizer, loader)
    assert stubborn.adoptions == [] and loader.batch_size == 8


# ---- reporting ---------------------------------------------------------------------------------


def test_report_file_holds_a_goodput_model_with_the_declared_length(
    job_factory, tmp_path: Path
) -> None:
    target = tmp_path / "report.json"
    job = job_factory(report_to=str(target), report_interval_s=0.05, adapt_every=5)
    model = nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    wrapped = job.parallel(model, optimizer)
    loader = job.loader(_data(), batch_size=16)
    _train(job, wrapped, optimizer, loader, epochs=2)
    job.finish()
    report = json.loads(target.read_text())
    parsed = GoodputModel.from_dict(report["model"])
    assert parsed.target_progress == pytest.approx(2 * 512 / 16)
    assert parsed.progress == pytest.approx(job.progress) and parsed.progress > 0
    assert parsed.limits.init_batch_size == 16
    assert report["step"] == job.step


def test_reported_metrics_round_trip_through_the_report_file(job_factory, tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    job = job_factory(report_to=str(target), report_interval_s=0.05, adapt_every=5)
    job.report_metrics(val_loss=1.5)  # before any step: kept until there is a model to send
    model = nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    wrapped = job.parallel(model, optimizer)
    loader = job.loader(_data(), batch_size=16)
    _train(job, wrapped, optimizer, loader)
    job.report_metrics(val_loss=0.31, accuracy=np.float32(0.9), steps=3)
    job.finish()
    report = JobReport.from_dict(json.loads(target.read_text()))
    assert report.metrics == {"val_loss": 0.31, "accuracy": pytest.approx(0.9), "steps": 3.0}
    assert (report.step, report.epoch, report.batch_size) == (job.step, 1, 16)
    assert report.model.progress == pytest.approx(job.progress)
    assert report == job.report()


@pytest.mark.parametrize(("metrics", "message"), [
    ({"loss": float("nan")}, "metric 'loss' must be finite"),
    ({"loss": float("inf")}, "metric 'loss' must be finite"),
    ({"loss": "low"}, "metric 'loss' must be a number"),
    ({"done": True}, "metric 'done' must be a number"),
    ({"loss": [1.0]}, "metric 'loss' must be a number"),
])
def test_metrics_that_are_not_finite_numbers_are_refused(job_factory, metrics, message) -> None:
    job = job_factory()
    job.report_metrics(kept=1.0)
    with pytest.raises(ThriftyError, match=message):
        job.report_metrics(**metrics)
    assert job.metrics == {"kept": 1.0}


def test_start_up_time_adds_up_over_attempts_and_cpu_energy_is_not_claimed_as_measured(
    job_factory, tmp_path: Path
) -> None:
    """Accounting bills restart overhead from what jobs report, so each attempt's start-up must
    be added to the previous ones' (kept in the checkpoint), and a CPU run has no energy counter."""
    target = tmp_path / "report.json"
    folder = tmp_path / "ckpt"

    def attempt(delay_s: float) -> tuple[dict, float]:
        job = job_factory(checkpoint_dir=folder, report_to=str(target), report_interval_s=0.05)
        time.sleep(delay_s)  # a slow start: building the model, loading data
        model = nn.Linear(8, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        wrapped = job.parallel(model, optimizer)
        loader = job.loader(_data(), batch_size=16)
        for _ in job.epochs(job.epoch + 1):
            for x, y in loader:
                optimizer.zero_grad()
                F.mse_loss(wrapped(x), y).backward()
                optimizer.step()
        job.finish()
        return json.loads(target.read_text()), job.startup_s

    first, first_s = attempt(0.3)
    assert first["startup_s"] == pytest.approx(first_s)
    assert 0.3 <= first_s < 5.0
    assert first["energy_kwh"] is None
    second, second_s = attempt(0.2)
    assert second["epoch"] == 2  # the second attempt resumed rather than starting over
    assert second["startup_s"] == pytest.approx(second_s)
    assert second_s >= first_s + 0.2


class _Collector(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Collector.bodies.append(self.rfile.read(length))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _report(step: int) -> JobReport:
    model = GoodputModel(throughput={}, grad=GradientStats(sqr=1.0, var=0.0),
                         limits=BatchLimits(8, 8))
    return JobReport(model=model, step=step)


def test_http_reports_arrive_and_a_dead_receiver_never_blocks() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        live = Reporter(f"http://127.0.0.1:{server.server_port}/report", interval_s=0.05)
        live.publish(_report(7))
        deadline = time.monotonic() + 5
        while not _Collector.bodies and time.monotonic() < deadline:
            time.sleep(0.02)
        live.close()
        assert json.loads(_Collector.bodies[-1]) == _report(7).to_dict()
        assert JobReport.from_dict(json.loads(_Collector.bodies[-1])).step == 7
    finally:
        server.shutdown()
        server.server_close()
    # Nothing listens on the freed port now: sending fails, publishing must still be instant.
    dead = Reporter(f"http://127.0.0.1:{server.server_port}/report", interval_s=0.01, timeout_s=0.5)
    reports = [_report(step) for step in range(1000)]
    start = time.perf_counter()
    for report in reports:
        dead.publish(report)
    assert time.perf_counter() - start < 0.5
    time.sleep(0.1)
    dead.close(flush=False)
    assert dead.failures >= 1 and dead.sent == 0
