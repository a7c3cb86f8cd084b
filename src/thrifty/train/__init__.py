"""Adaptive, elastic PyTorch training that measures itself and reports its goodput.

A few lines turn a data-parallel PyTorch script into a job the scheduler can resize:

    job = thrifty.train.init()                        # allocation, process group, checkpoint
    model = job.parallel(model, optimizer)            # DDP + timing + noise + LR scaling
    loader = job.loader(train_set, batch_size=64, max_batch_size=1024)
    for epoch in job.epochs(10):                      # resumes mid-epoch after a restart
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
    job.finish()

Names are imported on first use, so that `thrifty.train.env` (torch-free) can be read by a
launcher or a test without loading PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thrifty.train.bootstrap import init
    from thrifty.train.checkpoint import CheckpointStore
    from thrifty.train.data import AdaptiveDataLoader, ElasticSampler
    from thrifty.train.env import TrainEnv
    from thrifty.train.job import Job
    from thrifty.train.parallel import AdaptiveDataParallel
    from thrifty.train.report import Reporter
    from thrifty.train.scaling import AdamScale, AdaScale, LinearScale, ScalingRule, SqrtScale
    from thrifty.train.signals import EXIT_RESIZE

_HOMES = {
    "EXIT_RESIZE": "signals",
    "AdaScale": "scaling",
    "AdamScale": "scaling",
    "AdaptiveDataLoader": "data",
    "AdaptiveDataParallel": "parallel",
    "CheckpointStore": "checkpoint",
    "ElasticSampler": "data",
    "Job": "job",
    "LinearScale": "scaling",
    "Reporter": "report",
    "ScalingRule": "scaling",
    "SqrtScale": "scaling",
    "TrainEnv": "env",
    "init": "bootstrap",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:  # a submodule (`thrifty.train.memory`) not imported yet
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise  # the submodule exists but needs something missing: say what
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "EXIT_RESIZE",
    "AdaScale",
    "AdamScale",
    "AdaptiveDataLoader",
    "AdaptiveDataParallel",
    "CheckpointStore",
    "ElasticSampler",
    "Job",
    "LinearScale",
    "Reporter",
    "ScalingRule",
    "SqrtScale",
    "TrainEnv",
    "init",
]
