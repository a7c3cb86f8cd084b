"""Time per optimizer step as a function of placement and batch size (Pollux §3.2).

A micro-step computes gradients in `T_grad(m) = α_c + β_c·m`. Gradients are then all-reduced in
`T_sync`, which is 0 on one GPU, `α_r + β_r·(K−2)` inside one node and `α_n + β_n·(K−2)` across
nodes. The last backward pass overlaps with synchronisation, so an optimizer step with `s` extra
accumulation micro-steps takes `s·T_grad + (T_grad^γ + T_sync^γ)^(1/γ)`. Seven parameters, fitted
from observed step times by bounded least squares on their logarithms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

from thrifty.errors import ThriftyError

PARAM_NAMES = ("alpha_c", "beta_c", "alpha_r", "beta_r", "alpha_n", "beta_n", "gamma")
_FLOOR = 1e-8  # lower bound of every time parameter: keeps logarithms finite
_MAX_GAMMA = 10.0  # γ = 10 is already indistinguishable from max(T_grad, T_sync)
_INTER_NODE_PRIOR = 1.1  # until observed, inter-node sync costs at least 1.1× intra-node


@dataclass(frozen=True)
class ThroughputParams:
    """Fitted step-time parameters of one job on one GPU kind (seconds, seconds per sample)."""

    alpha_c: float
    beta_c: float
    alpha_r: float
    beta_r: float
    alpha_n: float
    beta_n: float
    gamma: float

    def __post_init__(self) -> None:
        values = np.array(self.as_array())
        if not np.all(np.isfinite(values)) or np.any(values[:6] < 0) or self.gamma < 1:
            raise ThriftyError(
                f"throughput parameters must be finite, non-negative and gamma >= 1: {asdict(self)}"
            )

    def as_array(self) -> tuple[float, ...]:
        return tuple(getattr(self, name) for name in PARAM_NAMES)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThroughputParams:
        missing = [name for name in PARAM_NAMES if name not in data]
        if missing:
            raise ThriftyError(f"throughput parameters lack {', '.join(missing)}")
        return cls(**{name: float(data[name]) for name in PARAM_NAMES})


@dataclass(frozen=True)
class StepObservation:
    """One measured configuration: seconds per micro-step including its gradient all-reduce."""

    num_nodes: int
    num_replicas: int
    atomic_bsz: int
    step_time: float
    sync_time: float


def compute_time(params: ThroughputParams, atomic_bsz: ArrayLike) -> NDArray[np.float64]:
    """Seconds for the forward and backward pass of one micro-batch of `atomic_bsz` per GPU."""
    return params.alpha_c + params.beta_c * np.asarray(atomic_bsz, dtype=float)


def sync_time(
    params: ThroughputParams, num_nodes: ArrayLike, num_replicas: ArrayLike
) -> NDArray[np.float64]:
    """Seconds to all-reduce the gradients; the slowest link (across nodes) dominates."""
    nodes = np.asarray(num_nodes)
    replicas = np.asarray(num_replicas)
    extra = np.maximum(replicas - 2, 0)
    inter = params.alpha_n + params.beta_n * extra
    intra = params.alpha_r + params.beta_r * extra
    return np.where(nodes > 1, inter, np.where(replicas > 1, intra, 0.0))


def _overlap(grad: NDArray[np.float64], sync: NDArray[np.float64], gamma: float) -> NDArray:
    """(T_grad^γ + T_sync^γ)^(1/γ), computed stably by factoring out the larger term."""
    big = np.maximum(grad, sync)
    small = np.minimum(grad, sync)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(big > 0, small / big, 0.0)
    return big * (1.0 + ratio**gamma) ** (1.0 / gamma)


def step_time(
    params: ThroughputParams,
    num_nodes: ArrayLike,
    num_replicas: ArrayLike,
    atomic_bsz: ArrayLike,
    accum_steps: ArrayLike = 0,
) -> NDArray[np.float64]:
    """Seconds per optimizer step: `accum_steps` plain micro-steps, then one overlapped with
    the gradient synchronisation."""
    grad = compute_time(params, atomic_bsz)
    sync = sync_time(params, num_nodes, num_replicas)
    return np.asarray(accum_steps) * grad + _overlap(grad, sync, params.gamma)


def throughput(
    params: ThroughputParams,
    num_nodes: ArrayLike,
    num_replicas: ArrayLike,
    atomic_bsz: ArrayLike,
    accum_steps: ArrayLike = 0,
) -> NDArray[np.float64]:
    """Samples per second processed by the whole job."""
    batch = np.asarray(num_replicas) * np.asarray(atomic_bsz) * (np.asarray(accum_steps) + 1)
    return batch / step_time(params, num_nodes, num_replicas, atomic_bsz, accum_steps)


def _loss_and_grad(
    x: NDArray[np.float64],
    nodes: NDArray[np.float64],
    replicas: NDArray[np.float64],
    bsz: NDArray[np.float64],
    log_compute: NDArray[np.float64],
    log_step: NDArray[np.float64],
) -> tuple[float, NDArray[np.float64]]:
    """RMS log-error of compute and step times plus Pollux's priors, with its exact gradient."""
    a_c, b_c, a_r, b_r, a_n, b_n, gamma = x
    n = len(bsz)
    grad = np.zeros(7)
    compute = a_c + b_c * bsz
    res_c = np.log(compute) - log_compute
    err_c = np.sqrt(np.mean(res_c**2))
    if err_c > 0:
        d = res_c / compute / (n * err_c)  # d err_c / d compute
        grad[0] += d.sum()
        grad[1] += (d * bsz).sum()

    inter = nodes > 1
    intra = (~inter) & (replicas > 1)
    extra = np.maximum(replicas - 2, 0)
    sync = np.where(inter, a_n + b_n * extra, np.where(intra, a_r + b_r * extra, 0.0))
    synced = sync > 0
    safe_sync = np.where(synced, sync, 1.0)  # keeps powers and logs finite where sync is 0
    cg = compute**gamma
    sg = np.where(synced, safe_sync**gamma, 0.0)
    total = cg + sg
    log_pred = np.log(total) / gamma
    res_s = log_pred - log_step
    err_s = np.sqrt(np.mean(res_s**2))
    if err_s > 0:
        w = res_s / (n * err_s)  # d err_s / d log_pred
        d_compute = w * compute ** (gamma - 1) / total
        d_sync = w * np.where(synced, safe_sync ** (gamma - 1), 0.0) / total
        grad[0] += d_compute.sum()
        grad[1] += (d_compute * bsz).sum()
        grad[2] += d_sync[intra].sum()
        grad[3] += (d_sync * extra)[intra].sum()
        grad[4] += d_sync[inter].sum()
        grad[5] += (d_sync * extra)[inter].sum()
        d_gamma = (cg * np.log(compute) + sg * np.log(safe_sync)) / total / gamma - np.log(
            total
        ) / gamma**2
        grad[6] += (w * d_gamma).sum()

    # Priors: γ near 1 (easier to fit), retrogression small relative to latency (optimistic).
    loss = err_c + err_s + 1e-3 * (gamma - 1) ** 2 + 1e-2 * ((b_n / a_n) ** 2 + (b_r / a_r) ** 2)
    grad[6] += 2e-3 * (gamma - 1)
    grad[5] += 2e-2 * b_n / a_n**2
    grad[4] -= 2e-2 * b_n**2 / a_n**3
    grad[3] += 2e-2 * b_r / a_r**2
    grad[2] -= 2e-2 * b_r**2 / a_r**3
    return float(loss), grad


def fit_throughput(
    observations: Sequence[StepObservation], initial: ThroughputParams | None = None
) -> ThroughputParams:
    """Fit the seven parameters to observed step and sync times (bounded L-BFGS-B on log-errors).

    `initial` warm-starts the search from an earlier fit of the same job: a job refits every
    time it sees a new configuration, and the previous answer is close, so the search converges
    in a fraction of the iterations.

    Parameters the observations cannot identify are pinned, as Pollux does: α_c at half the compute
    time when only one micro-batch size was seen, the inter-node terms without multi-node runs, the
    intra-node terms without single-node multi-GPU runs, the retrogression terms without more than
    two replicas. Without multi-node runs the inter-node terms are then raised to at least 1.1× the
    intra-node ones, so the model never believes an untried multi-node placement is cheaper.
    """
    if not observations:
        raise ThriftyError("cannot fit a throughput model without at least one observed step")
    nodes = np.array([o.num_nodes for o in observations], dtype=float)
    replicas = np.array([o.num_replicas for o in observations], dtype=float)
    bsz = np.array([o.atomic_bsz for o in observations], dtype=float)
    steps = np.array([o.step_time for o in observations], dtype=float)
    syncs = np.array([o.sync_time for o in observations], dtype=float)
    if np.any(steps <= 0) or np.any(syncs < 0) or np.any(syncs >= steps):
        raise ThriftyError("observed step times must be positive and larger than their sync times")
    computes = steps - syncs

    lower = np.array([_FLOOR] * 6 + [1.0])
    upper = np.array([np.inf] * 6 + [_MAX_GAMMA])
    x0 = np.array([1e-1, 1e-2] * 3 + [1.0 + 1e-3])
    if initial is not None:
        x0 = np.clip(np.array(astuple(initial), dtype=float), lower, upper)
        x0[:6] = np.maximum(x0[:6], 1e-4)  # off the floor, where the priors' gradients are huge

    def pin(index: int, value: float) -> None:
        x0[index] = lower[index] = upper[index] = value

    if len(np.unique(bsz)) == 1:
        pin(0, float(np.mean(computes)) / 2)
    if not np.any(nodes > 1):
        pin(4, _FLOOR)
        pin(5, _FLOOR)
    if not np.any((nodes == 1) & (replicas > 1)):
        pin(2, _FLOOR)
        pin(3, _FLOOR)
    if not np.any(replicas > 2):
        pin(3, _FLOOR)
        pin(5, _FLOOR)

    result = minimize(
        _loss_and_grad,
        x0,
        args=(nodes, replicas, bsz, np.log(computes), np.log(steps)),
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(lower, upper, strict=True)),
    )
    x = np.clip(result.x, lower, upper)
    if not np.any(nodes > 1):
        x[4] = max(x[4], x[2] * _INTER_NODE_PRIOR)
        x[5] = max(x[5], x[3] * _INTER_NODE_PRIOR)
    return ThroughputParams(*map(float, x))
