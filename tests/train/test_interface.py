"""The loader and the data-parallel wrapper need only `JobHandle` from the job, not `Job`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from launching import python_prints
from torch import nn
from torch.utils.data import TensorDataset

from thrifty.goodput.model import BatchLimits
from thrifty.goodput.noise import NoiseEstimator
from thrifty.train.data import AdaptiveDataLoader
from thrifty.train.env import TrainEnv
from thrifty.train.interface import BatchCursor, StepOutcome
from thrifty.train.parallel import AdaptiveDataParallel
from thrifty.train.profile import StepProfile


@dataclass
class Handle:
    """The smallest job the two accept: it only counts the steps reported to it."""

    env: TrainEnv = field(default_factory=TrainEnv)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    epoch: int = 0
    step: int = 0
    stats_every: int = 1
    limits: BatchLimits = field(default_factory=lambda: BatchLimits(8, 8))
    noise: NoiseEstimator = field(default_factory=lambda: NoiseEstimator(8))
    profile: StepProfile = field(default_factory=StepProfile)
    batches: BatchCursor | None = None
    outcomes: list[StepOutcome] = field(default_factory=list)

    def stop_requested(self) -> bool:
        return False

    def after_step(self, outcome: StepOutcome) -> None:
        self.step += 1
        self.outcomes.append(outcome)


def test_a_stand_in_job_drives_the_loader_and_the_wrapper() -> None:
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 4, generator=gen), torch.randn(64, 1, generator=gen))
    handle = Handle()
    loader = AdaptiveDataLoader(handle, data, atomic_bsz=4, accum_steps=1)
    handle.batches = loader
    assert not loader.in_batch
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    wrapped = AdaptiveDataParallel(handle, model, optimizer)
    for x, y in loader:
        assert loader.in_batch
        optimizer.zero_grad()
        F.mse_loss(wrapped(x), y).backward()
        optimizer.step()
    assert not loader.in_batch
    assert handle.step == 8  # 64 samples, 8 per step (two micro-steps of 4)
    assert all(o.local_bsz == 4 and not o.stop for o in handle.outcomes)
    assert handle.noise.updates_ > 0  # the accumulation micro-steps measured the noise


def test_neither_imports_the_job() -> None:
    code = ("import sys, thrifty.train.data, thrifty.train.parallel; "
            "print('thrifty.train.job' in sys.modules)")
    assert python_prints(code) == "False"
