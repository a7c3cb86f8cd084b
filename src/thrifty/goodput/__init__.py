"""Throughput, statistical efficiency and goodput: the models every other layer reads."""

from thrifty.goodput.efficiency import GradientStats, efficiency, gain
from thrifty.goodput.model import BatchLimits, GoodputModel, growth_cap, split_batch
from thrifty.goodput.speedup import (
    GoodputGrid,
    progress_rate,
    smallest_positive,
    speedup_over_one_gpu,
)
from thrifty.goodput.throughput import (
    StepObservation,
    ThroughputParams,
    compute_time,
    fit_throughput,
    step_time,
    sync_time,
    throughput,
)

__all__ = [
    "BatchLimits",
    "GoodputGrid",
    "GoodputModel",
    "GradientStats",
    "StepObservation",
    "ThroughputParams",
    "compute_time",
    "efficiency",
    "fit_throughput",
    "gain",
    "growth_cap",
    "progress_rate",
    "smallest_positive",
    "speedup_over_one_gpu",
    "split_batch",
    "step_time",
    "sync_time",
    "throughput",
]
