"""GoodputModels of a profiled application, as the instance advisor needs them.

A simulated job learns its model by running; to advise before the first run, the advisor takes
the model a profile implies: throughput fitted to the measured step times of each GPU kind, and the
measured gradient noise, in a few phases of training because the noise grows as it proceeds.
"""

from __future__ import annotations

import itertools

import numpy as np

from thrifty.accounting.advisor import Phase
from thrifty.goodput import (
    BatchLimits,
    GoodputModel,
    GradientStats,
    StepObservation,
    fit_throughput,
)
from thrifty.sim.profiles import AppProfile

_GPUS_PER_NODE = {"aws": 4, "rtx": 8, "dgx-ext": 8}


def _placements(per_node: int) -> list[tuple[int, ...]]:
    small = [(g,) for g in (1, 2, 4, 8) if g <= per_node]
    return small + [(per_node,) * n for n in (2, 4, 8, 16)] + [(1,) * n for n in (2, 4)]


def profile_phases(profile: AppProfile, phases: int = 6) -> list[Phase]:
    """The whole training of `profile` as `phases` GoodputModels, one per stretch of epochs."""
    kinds = sorted(profile.kinds)
    throughput = {}
    for kind in kinds:
        kp = profile.kind(kind)
        observations = []
        bsz = np.unique(np.geomspace(kp.min_local_bsz, kp.max_local_bsz, 6).round().astype(int))
        for placement in _placements(_GPUS_PER_NODE.get(kind, 4)):
            for b in bsz.tolist():
                measured = kp.step_time(placement, int(b))
                if measured is not None:
                    observations.append(StepObservation(len(placement), sum(placement), int(b),
                                                        measured[0], measured[1]))
        throughput[kind] = fit_throughput(observations)
    limits = BatchLimits(
        init_batch_size=profile.init_batch_size,
        max_batch_size=profile.max_batch_size,
        min_local_bsz=min(profile.kind(k).min_local_bsz for k in kinds),
        max_local_bsz=max(profile.kind(k).max_local_bsz for k in kinds),
    )
    caps = {k: profile.kind(k).max_local_bsz for k in kinds}
    bounds = np.linspace(0, profile.epochs, phases + 1).round().astype(int)
    out = []
    progress = np.concatenate([[0.0], profile.epoch_progress])
    for start, end in itertools.pairwise(bounds):
        if end <= start:
            continue
        sqr, var = profile.grad_stats(float(profile.init_batch_size), int((start + end) // 2))
        model = GoodputModel(throughput=throughput, grad=GradientStats(sqr, var), limits=limits,
                             local_caps=caps)
        out.append(Phase(model, float(progress[end] - progress[start])))
    return out
