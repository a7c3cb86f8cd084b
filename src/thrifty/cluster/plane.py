"""The control plane: store, executor and scheduler, with the loop running in a thread.

The API server and `thrifty demo` both embed one. Submissions wake the loop, so a job on an idle
cluster starts within a second rather than at the next interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from thrifty.accounting.budgets import BudgetBook
from thrifty.accounting.tariff import Tariff
from thrifty.cluster.admission import admit
from thrifty.cluster.budgets import LiveBudgets
from thrifty.cluster.executor import Executor
from thrifty.cluster.scheduler import RoundStats, Scheduler, SchedulerConfig
from thrifty.cluster.schema import JobRow
from thrifty.cluster.spec import JobSpec
from thrifty.cluster.states import ACTIVE_STATES
from thrifty.cluster.store import Store
from thrifty.cluster.usage import live_tariff
from thrifty.policy.base import Policy
from thrifty.policy.registry import make_policy

log = logging.getLogger(__name__)


class ControlPlane:
    """One store, one executor, one policy; `start()` runs a round every `interval_s`."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        policy: Policy | str = "thrifty",
        interval_s: float = 30.0,
        *,
        home: Path,
        quotas: Mapping[str, Mapping[str, int]] | None = None,
        stop_grace_s: float = 60.0,
        retry_backoff_s: float = 5.0,
        restart_s: float = 30.0,
        tariff: Tariff | None = None,
        budgets: BudgetBook | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.executor = executor
        self.policy = make_policy(policy) if isinstance(policy, str) else policy
        self.interval_s = interval_s
        self.check_s = min(1.0, interval_s)  # how often ended attempts are looked for
        self._tariff = tariff
        self.budgets = None if budgets is None else LiveBudgets(budgets, self.tariff, interval_s)
        config = SchedulerConfig(restart_s=restart_s, retry_backoff_s=retry_backoff_s,
                                 grace_s=stop_grace_s, quotas=dict(quotas or {}))
        self.scheduler = Scheduler(self.store, executor, self.policy, home=self.home,
                                   config=config, budgets=self.budgets)
        self.last_round: RoundStats | None = None
        self.rounds = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def tariff(self) -> Tariff:
        """What usage is billed with (built on first use: the default grid's data loads then)."""
        if self._tariff is None:
            self._tariff = live_tariff()
        return self._tariff

    def submit(self, spec: JobSpec, request_key: str | None = None) -> JobRow:
        """Store a job the cluster could run (`admit`: a `SpecError` for one it never could)."""
        admit(spec, self.executor.nodes(), self.executor.shares_filesystem)
        row = self.store.submit(spec, request_key=request_key)
        self.wake()
        return row

    def cancel(self, job_id: str) -> JobRow:
        row = self.store.request_cancel(job_id)
        self.wake()
        return row

    def wake(self) -> None:
        self._wake.set()

    def run_round(self) -> RoundStats:
        with self._lock:
            stats = self.scheduler.round()
            self.last_round, self.rounds = stats, self.rounds + 1
            return stats

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_round()
            except Exception:  # the loop must outlive one bad round; the next one retries
                log.exception("scheduling round failed")
            deadline = time.monotonic() + self.interval_s
            while not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or self._wake.wait(min(left, self.check_s)):
                    break
                try:
                    if self.scheduler.attempts_ended():
                        break
                except Exception:
                    log.exception("checking attempts failed")
            self._wake.clear()

    def start(self) -> None:
        """Adopt what still runs from a previous life, then schedule in the background."""
        self.scheduler.recover()
        self._thread = threading.Thread(target=self._loop, name="thrifty-scheduler", daemon=True)
        self._thread.start()

    def stop(self, stop_jobs: bool = False) -> None:
        """End the loop. Running jobs go on (a restart adopts them) unless `stop_jobs`."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            # A round in progress may be waiting for replicas to checkpoint.
            self._thread.join(timeout=self.scheduler.config.grace_s + 30.0)
        if stop_jobs:
            self.executor.stop(self.scheduler.open_handles(), self.scheduler.config.grace_s)
        self.executor.close()

    def wait_idle(self, timeout_s: float, poll_s: float = 0.5) -> bool:
        """Block until no job is queued or running (True) or `timeout_s` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.store.jobs(states=list(ACTIVE_STATES), limit=1):
                return True
            time.sleep(poll_s)
        return False
