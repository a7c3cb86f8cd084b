"""In-memory curves whose shape a sweep test needs."""

from __future__ import annotations

import math

from thrifty.tune.curves import Config, Curve, CurveSet


def compute_bound_curves(epochs: int = 9, samples: int = 25_600) -> CurveSet:
    """Eight configurations of one model whose epochs are dominated by per-sample compute
    (1 ms per step fixed, 1 ms per sample), so data-parallel replicas speed them up nearly
    linearly. Accuracy rises towards a ceiling that only the best learning rate reaches; the
    ranking at epoch 1 is the final ranking, so ASHA keeps the right trials."""
    curves = []
    for i, lr in enumerate((0.001, 0.003, 0.01, 0.03)):
        ceiling = 0.6 + 0.1 * i
        for batch in (64, 256):
            steps = math.ceil(samples / batch)
            epoch_s = steps * (0.001 + 0.001 * batch)
            for seed in (0, 1):
                accuracy = tuple(ceiling * (1 - math.exp(-(e + 1) / 3)) + 0.001 * seed
                                 for e in range(epochs))
                config = Config("toy", lr=lr, batch_size=batch, width=64, weight_decay=0.0)
                curves.append(Curve(config, seed, accuracy, (1.0,) * epochs, (epoch_s,) * epochs,
                                    (samples,) * epochs))
    return CurveSet(tuple(curves), "compute-bound toy")
