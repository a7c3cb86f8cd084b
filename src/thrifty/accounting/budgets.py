"""Budgets: USD (and optionally kg CO2e) per user or team per month, alerts, and caps.

A budget file is TOML:

    period_days = 30                 # a budget month; simulated time 0 starts the first
    alert_thresholds = [0.5, 0.8, 1.0]
    webhook = "https://hooks.example/thrifty"   # optional: alerts are POSTed here as JSON
    [teams.vision]
    usd_per_month = 500
    kgco2e_per_month = 40            # optional
    usd_per_hour = 60                # optional spend-rate cap: no surge above this
    [users."vision/alice"]
    usd_per_month = 100

`SpendTracker` keeps what each team and user spent per period and raises an `Alert` the first time
spending crosses each threshold. It is pure and driven by `now`: the scheduler that meters the
allocations charges it, and asks it how much an owner may still spend.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from thrifty.accounting.ledger import split_owner
from thrifty.errors import InputError, ThriftyError

Scope = Literal["team", "user"]
Metric = Literal["usd", "kgco2e"]
MONTH_S = 30 * 24 * 3600.0


@dataclass(frozen=True)
class Budget:
    scope: Scope
    name: str  # a team, or a user as "team/user"
    usd_per_month: float | None = None
    kgco2e_per_month: float | None = None
    usd_per_hour: float | None = None

    def limit(self, metric: Metric) -> float | None:
        return self.usd_per_month if metric == "usd" else self.kgco2e_per_month


@dataclass(frozen=True)
class BudgetBook:
    budgets: Mapping[tuple[str, str], Budget] = field(default_factory=dict)
    period_s: float = MONTH_S
    thresholds: tuple[float, ...] = (0.5, 0.8, 1.0)
    webhook: str | None = None

    def for_owner(self, owner: str) -> list[Budget]:
        """The team's budget and the user's, where set."""
        team, user = split_owner(owner)
        found = [self.budgets.get(("team", team)), self.budgets.get(("user", f"{team}/{user}"))]
        return [b for b in found if b is not None]


@dataclass(frozen=True)
class Alert:
    scope: Scope
    name: str
    metric: Metric
    threshold: float
    spent: float
    limit: float
    period: int
    now_s: float

    def message(self) -> str:
        unit = "USD" if self.metric == "usd" else "kg CO2e"
        return (f"{self.scope} {self.name} has spent {self.spent:.2f} of {self.limit:.2f} {unit} "
                f"this period ({self.threshold:.0%} threshold crossed)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message()}


def _number(path: str, value: Any, where: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(path, f"expected a number, got {value!r}", field=where)
    if value < 0 or (positive and value == 0):
        raise InputError(path, f"must be positive, got {value!r}", field=where)
    return float(value)


def load_budgets(path: Path) -> BudgetBook:
    """Read and validate a budget file (see the module docstring)."""
    path = Path(path)
    p = str(path)
    if not path.is_file():
        raise InputError(p, "budget file not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise InputError(p, f"not valid TOML: {err}") from None
    unknown = set(data) - {"period_days", "alert_thresholds", "webhook", "teams", "users"}
    if unknown:
        raise InputError(p, f"unknown key(s) {', '.join(sorted(unknown))}")
    period = _number(p, data.get("period_days", 30), "period_days") * 86400
    thresholds = data.get("alert_thresholds", [0.5, 0.8, 1.0])
    if not isinstance(thresholds, list):
        raise InputError(p, "must be a list of fractions", field="alert_thresholds")
    levels = tuple(sorted(_number(p, t, "alert_thresholds") for t in thresholds))
    webhook = data.get("webhook")
    if webhook is not None and not str(webhook).startswith(("http://", "https://")):
        raise InputError(p, f"must be an http(s) URL, got {webhook!r}", field="webhook")
    budgets: dict[tuple[str, str], Budget] = {}
    for scope, table in (("team", data.get("teams", {})), ("user", data.get("users", {}))):
        section = f"{scope}s"
        if not isinstance(table, dict):
            raise InputError(p, "must be a table", field=section)
        for name, entry in table.items():
            where = f"{section}.{name}"
            if not isinstance(entry, dict):
                raise InputError(p, "must be a table", field=where)
            extra = set(entry) - {"usd_per_month", "kgco2e_per_month", "usd_per_hour"}
            if extra:
                raise InputError(p, f"unknown key(s) {', '.join(sorted(extra))}", field=where)
            if not entry:
                raise InputError(p, "sets no limit", field=where)
            if scope == "user" and "/" not in name:
                raise InputError(p, "users are named team/user", field=where)
            values = {k: _number(p, v, f"{where}.{k}") for k, v in entry.items()}
            budgets[(scope, name)] = Budget(scope, name, **values)  # type: ignore[arg-type]
    return BudgetBook(budgets, period, levels, None if webhook is None else str(webhook))


class SpendTracker:
    """Spend per (scope, name, metric) per period, and the alerts it has raised."""

    def __init__(self, book: BudgetBook):
        self.book = book
        self._spent: dict[tuple[str, str, str, int], float] = {}
        self._raised: set[tuple[str, str, str, int, float]] = set()

    def period(self, now_s: float) -> int:
        return int(now_s // self.book.period_s)

    def spent(self, scope: Scope, name: str, metric: Metric, now_s: float) -> float:
        return self._spent.get((scope, name, metric, self.period(now_s)), 0.0)

    def charge(self, owner: str, usd: float, kgco2e: float, now_s: float) -> list[Alert]:
        """Add spending at time `now_s`; returns alerts for thresholds newly crossed."""
        if usd < 0 or kgco2e < 0:
            raise ThriftyError(f"cannot charge negative amounts ({usd} USD, {kgco2e} kg)")
        period = self.period(now_s)
        team, user = split_owner(owner)
        alerts: list[Alert] = []
        for scope, name in (("team", team), ("user", f"{team}/{user}")):
            budget = self.book.budgets.get((scope, name))
            for metric, amount in (("usd", usd), ("kgco2e", kgco2e)):
                key = (scope, name, metric, period)
                total = self._spent.get(key, 0.0) + amount
                self._spent[key] = total
                limit = budget.limit(metric) if budget else None  # type: ignore[arg-type]
                if not limit:
                    continue
                for level in self.book.thresholds:
                    tag = (scope, name, metric, period, level)
                    if total >= level * limit and tag not in self._raised:
                        self._raised.add(tag)
                        alerts.append(Alert(scope, name, metric, level, total, limit,  # type: ignore[arg-type]
                                            period, now_s))
        return alerts

    def headroom(self, owner: str, metric: Metric, now_s: float) -> float:
        """How much more the owner may spend this period before a cap (inf without one)."""
        left = math.inf
        for budget in self.book.for_owner(owner):
            limit = budget.limit(metric)
            if limit is not None:
                left = min(left, limit - self.spent(budget.scope, budget.name, metric, now_s))
        return left

    def rate_cap(self, owner: str) -> tuple[str, float] | None:
        """The team's spend-rate cap (USD per hour), if it has one: (team, cap)."""
        team, _ = split_owner(owner)
        budget = self.book.budgets.get(("team", team))
        if budget is None or budget.usd_per_hour is None:
            return None
        return team, budget.usd_per_hour

    def scopes(self, owner: str) -> Sequence[tuple[str, str]]:
        team, user = split_owner(owner)
        return (("team", team), ("user", f"{team}/{user}"))

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {"scope": s, "name": n, "metric": m, "period": p, "spent": v}
            for (s, n, m, p), v in sorted(self._spent.items())
        ]


def raised_alerts(alerts: Iterable[Alert]) -> list[dict[str, Any]]:
    return [a.to_dict() for a in alerts]
