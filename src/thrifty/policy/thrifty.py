"""thrifty's own policy: heterogeneity-aware goodput scheduling that weighs what is left to do.

It shares Sia's machinery (every job's goodput on every (GPU kind, GPU count) configuration, one
configuration per job chosen by an integer program, see `configs`) and changes what a
configuration is worth:

* **Explore a node at once.** A new job is measured on one GPU of every kind on arrival (as in
  Sia); it may then take up to a whole node of any kind straight away, instead of doubling its
  GPUs round by round (Pollux's rule, which Sia keeps): synchronisation inside a node is cheap
  and rarely surprises, and each doubling would cost a restart. Beyond a node it grows by
  doubling as it learns. Short jobs gain the most: most finish on their first allocation.
* **Remaining time, not raw goodput.** A job reports how far it has come and where it ends, so
  its predicted time to finish on a configuration is remaining work / goodput. A move stalls it
  for its restart delay; judged over the time the new configuration will likely last (its
  remaining time, at most `horizon_s`), the move keeps (window − delay) / window of its goodput:
  nothing for a job about to finish, little for a long job that later arrivals will reshape.
* **Shortest remaining time first, within fairness bounds.** Each job's value is weighted by
  (median predicted remaining time / its own)^`srpt_power`, clipped to [1/`max_weight`,
  `max_weight`]: short jobs are admitted first. Keeping a running job where it is weighs at
  least as much as a median job, so long jobs are not pre-empted by every short arrival.
* **Hysteresis.** A running job changes configuration only for at least `min_gain` predicted
  speed-up in its time to finish, so noise in the models does not cause restarts.
* **Cost and carbon.** With `cost_weight` > 0, every configuration's value is reduced by its GPUs'
  price (the nodes' `price_per_hour`, USD per GPU-hour) times the weight: the same integer program
  then trades time against money.

Value of configuration c for job j: w_j · (λ − S_jc^p), with S_jc = T_j / t_jc the speed-up of
the job's predicted time to finish over its slowest useful configuration, p < 0 the fairness power
and λ > 1 the worth of running at all (so, as in Sia, running always beats waiting).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from thrifty.errors import ThriftyError
from thrifty.policy.base import ClusterView, JobView
from thrifty.policy.configs import ConfigPolicy, GoodputTable, config_of


class ThriftyPolicy(ConfigPolicy):
    """The default policy. Knobs (documented defaults):

    `fairness` (−0.5): the power p < 0; closer to 0 favours total goodput, more negative favours
    equal speed-ups. `srpt_power` (0.5) and `max_weight` (4): how strongly shorter remaining work
    is preferred, and its bound. `min_gain` (1.1): least predicted speed-up that justifies moving a
    running job. `cost_weight` (0): value given up per USD/hour of GPUs (0 ignores prices).
    `run_value` (1.1): λ, the worth of running at all. `horizon_s` (3600): the longest a new
    configuration is assumed to last when a restart is weighed against it.
    """

    name = "thrifty"
    fill_a_node = True

    def __init__(
        self,
        seed: int = 0,
        fairness: float = -0.5,
        srpt_power: float = 0.5,
        max_weight: float = 4.0,
        min_gain: float = 1.1,
        cost_weight: float = 0.0,
        run_value: float = 1.1,
        horizon_s: float = 3600.0,
    ):
        if fairness >= 0:
            raise ThriftyError(f"thrifty: fairness must be negative, got {fairness}")
        if max_weight < 1 or min_gain < 1 or cost_weight < 0 or run_value <= 1 or horizon_s <= 0:
            raise ThriftyError(
                "thrifty: max_weight and min_gain must be ≥ 1, cost_weight ≥ 0, run_value > 1, "
                "horizon_s > 0"
            )
        self.seed = seed
        self.fairness = fairness
        self.srpt_power = srpt_power
        self.max_weight = max_weight
        self.min_gain = min_gain
        self.cost_weight = cost_weight
        self.run_value = run_value
        self.horizon_s = horizon_s

    def values(
        self, jobs: Sequence[JobView], cluster: ClusterView, goodput: NDArray[np.float64],
        now: float,
    ) -> NDArray[np.float64]:
        assert self._table is not None  # set by `allocate` before it asks
        configs = self._table.configs
        current = np.array([config_of(job.allocation, configs) for job in jobs])
        restart = np.array([job.restart_s for job in jobs])

        finish = self.predicted_finish(jobs, goodput)
        runs = np.isfinite(finish)
        moved = np.ones(goodput.shape, dtype=bool)
        held = current >= 0
        moved[np.flatnonzero(held), current[held]] = False
        # A move stalls the job for its restart delay. Judged over the time the new configuration
        # is likely to last (the job's remaining time, at most `horizon_s`), it is worth
        # (window - delay) / window of its goodput: nothing to a job about to finish, little to
        # a long job that the next arrivals will reshape again.
        window = np.minimum(finish, self.horizon_s)
        lost = np.where(moved, np.minimum(restart[:, None] / np.maximum(window, 1e-9), 1.0), 0.0)
        finish = finish / np.maximum(1.0 - lost, 1e-9)

        slowest = np.where(runs, finish, 0.0).max(axis=1)  # T_j: slowest useful configuration
        speedup = np.zeros_like(goodput)
        speedup[runs] = (slowest[:, None] * np.ones_like(goodput))[runs] / finish[runs]

        # Hysteresis: a running job changes configuration only for at least `min_gain`; it is
        # never shrunk in place (being moved costs it a restart either way), only pre-empted.
        for i in np.flatnonzero(held):
            stay = speedup[i, current[i]]
            if stay > 0:
                speedup[i, moved[i] & (speedup[i] < stay * self.min_gain)] = 0.0

        valid = speedup > 0
        weight = self._weights(slowest, runs.any(axis=1))
        values = np.zeros_like(goodput)
        values[valid] = self.run_value - speedup[valid] ** self.fairness
        values *= weight[:, None]
        # Keeping a running job where it is weighs at least as much as a median job: a long job
        # is not pre-empted for every short arrival (each pre-emption costs it a restart later).
        rows = np.flatnonzero(held)
        values[rows, current[rows]] *= np.maximum(1.0 / weight[rows], 1.0)
        if self.cost_weight > 0:
            price = np.broadcast_to(_config_prices(cluster, self._table), values.shape)
            values[valid] -= self.cost_weight * price[valid]
        return values

    def predicted_finish(
        self, jobs: Sequence[JobView], goodput: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Seconds each job needs to finish on each configuration (inf where it cannot run):
        its remaining work at today's goodput. A subclass that knows better how a job's goodput
        will change as it trains says so here (`benchmarks/policy_foresight.py` does)."""
        remaining = np.array([_remaining_work(job) for job in jobs])
        runs = goodput > 0
        finish = np.full(goodput.shape, np.inf)
        finish[runs] = np.broadcast_to(remaining[:, None], goodput.shape)[runs] / goodput[runs]
        return finish

    def _weights(self, slowest: NDArray[np.float64], known: NDArray[np.bool_]) -> NDArray:
        """Shortest-remaining-time-first weights, bounded so no job is starved outright."""
        if not known.any():
            return np.ones(len(slowest))
        median = float(np.median(slowest[known]))
        ratio = np.where(known, median / np.maximum(slowest, 1e-9), 1.0)
        return np.clip(ratio**self.srpt_power, 1 / self.max_weight, self.max_weight)


def _remaining_work(job: JobView) -> float:
    """Scale-invariant steps left; a job that has not declared its length is assumed to be as
    far from its end as from its start (the least-attained-service guess)."""
    model = job.model
    if model is None:
        return 1.0
    if model.target_progress is not None:
        return max(model.target_progress - model.progress, 1.0)
    return max(model.progress, 1.0)


def _config_prices(cluster: ClusterView, table: GoodputTable) -> NDArray[np.float64]:
    """USD per hour of each configuration: its GPUs at their kind's mean price per GPU."""
    configs = table.configs
    per_gpu = []
    for kind in configs.kinds:
        nodes = cluster.nodes_of(kind)
        per_gpu.append(sum(n.price_per_hour for n in nodes) / max(sum(n.num_gpus for n in nodes),
                                                                   1))
    return np.array(per_gpu)[configs.kind] * configs.count
