"""The sweep spec: what to search, how to judge a trial, when to stop, validated before a run.

A sweep arrives as YAML or JSON written by hand. Like the job spec (`thrifty.cluster.spec`),
every wrong field is reported at once with its dotted path (`space.lr.low`) and the fix, so a
user corrects a sweep in one go. The `job` template is only required to be a mapping here: the
cluster validates it when it submits each trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from thrifty.errors import ThriftyError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
NUMERIC_TYPES = ("uniform", "loguniform", "int")
Choice = bool | int | float | str


class SweepSpecError(ThriftyError):
    """A sweep that does not validate; `problems` lists (field path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"invalid sweep spec ({len(problems)} problem(s)):\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Param(_Strict):
    """One dimension of the search space.

    `high` is declared before `low` so that the check of `low` against `high` runs once both are
    read and is reported at `low`, the field a user usually got wrong.
    """

    type: Literal["uniform", "loguniform", "int", "categorical"]
    high: float | None = Field(None, validate_default=True)
    low: float | None = Field(None, validate_default=True)
    step: float | None = Field(None, validate_default=True)
    choices: list[Choice] | None = Field(None, validate_default=True)

    @field_validator("high")
    @classmethod
    def _high(cls, high: float | None, info: ValidationInfo) -> float | None:
        return _bound("high", high, info)

    @field_validator("low")
    @classmethod
    def _low(cls, low: float | None, info: ValidationInfo) -> float | None:
        low = _bound("low", low, info)
        kind, high = info.data.get("type"), info.data.get("high")
        if low is None or kind not in NUMERIC_TYPES:
            return low
        if high is not None and low > high:
            raise ValueError(f"low ({low:g}) is above high ({high:g}); swap them")
        if kind == "loguniform" and low <= 0:
            raise ValueError(
                f"a loguniform range must be positive, got low = {low:g}; use a low above 0 "
                "or type: uniform"
            )
        return low

    @field_validator("step")
    @classmethod
    def _step(cls, step: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("type")
        if step is None:
            return None
        if kind in ("categorical", "loguniform"):
            raise ValueError(f"a {kind} parameter takes no step; remove it")
        if step <= 0:
            raise ValueError(f"step must be above 0, got {step:g}")
        if kind == "int" and not float(step).is_integer():
            raise ValueError(f"an int parameter's step must be a whole number, got {step:g}")
        return step

    @field_validator("choices")
    @classmethod
    def _choices(cls, choices: list[Choice] | None, info: ValidationInfo) -> list[Choice] | None:
        kind = info.data.get("type")
        if kind != "categorical":
            if choices is not None:
                raise ValueError(f"a {kind} parameter takes low/high, not choices; remove them")
            return None
        if not choices:
            raise ValueError("a categorical parameter needs at least one choice; list them")
        if len(set(map(repr, choices))) != len(choices):
            raise ValueError("choices repeat a value; list each once")
        return choices

    def grid(self) -> list[Choice] | None:
        """Every value this dimension can take, or None when it is continuous."""
        if self.type == "categorical":
            return list(self.choices or [])
        assert self.low is not None and self.high is not None
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        count = int((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]


def _bound(name: str, value: float | None, info: ValidationInfo) -> float | None:
    kind = info.data.get("type")
    if kind == "categorical":
        if value is not None:
            raise ValueError(f"a categorical parameter takes choices, not {name}; remove it")
        return None
    if kind in NUMERIC_TYPES and value is None:
        raise ValueError(f"a {kind} parameter needs {name}")
    if kind == "int" and value is not None and not float(value).is_integer():
        raise ValueError(f"an int parameter's {name} must be a whole number, got {value:g}")
    return value


class Budget(_Strict):
    """What the sweep may spend: trials always; wall time, slot-hours and dollars optionally."""

    trials: int = Field(ge=1, le=1_000_000)
    wall_s: float | None = Field(None, gt=0)
    gpu_hours: float | None = Field(None, gt=0)
    usd: float | None = Field(None, gt=0)


class Sampler(_Strict):
    """Optuna's sampler that proposes each new trial's hyperparameters."""

    type: Literal["random", "tpe", "grid"] = "random"
    seed: int | None = None


class _Rungs(_Strict):
    max_epochs: int = Field(ge=1, le=100_000)
    grace_epochs: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2, le=100)

    @model_validator(mode="after")
    def _grace_fits(self) -> _Rungs:
        if self.grace_epochs > self.max_epochs:
            raise ValueError(
                f"grace_epochs ({self.grace_epochs}) exceeds max_epochs ({self.max_epochs}); "
                "lower grace_epochs"
            )
        return self

    def rungs(self) -> list[int]:
        """Epochs at which a trial is compared with the others: grace·η^k up to max_epochs."""
        out, epoch = [], self.grace_epochs
        while epoch <= self.max_epochs:
            out.append(epoch)
            epoch *= self.reduction_factor
        return out


class Asha(_Rungs):
    """Asynchronous successive halving: a trial goes on past a rung only in the top 1/η there."""

    type: Literal["asha"]


class Hyperband(_Rungs):
    """Several ASHA brackets of different grace periods, hedging against slow starters."""

    type: Literal["hyperband"]


class Median(_Strict):
    """Stop a trial whose value is below the median of earlier trials at the same epoch."""

    type: Literal["median"]
    max_epochs: int = Field(ge=1, le=100_000)
    warmup_epochs: int = Field(0, ge=0)
    startup_trials: int = Field(5, ge=0)

    def rungs(self) -> list[int]:
        return []


class NoStopping(_Strict):
    """Every trial trains to max_epochs."""

    type: Literal["none"]
    max_epochs: int = Field(ge=1, le=100_000)

    def rungs(self) -> list[int]:
        return []


Stopping = Annotated[Asha | Hyperband | Median | NoStopping, Field(discriminator="type")]


class SweepSpec(_Strict):
    """One hyperparameter sweep as its owner describes it."""

    name: str = Field(pattern=NAME_PATTERN)
    job: dict[str, Any] = Field(description="Job spec template; the cluster validates it.")
    space: dict[str, Param] = Field(min_length=1)
    metric: str = Field(min_length=1, max_length=64)
    mode: Literal["max", "min"] = "max"
    budget: Budget
    target: float | None = Field(None, description="Stop the sweep once a trial reaches it.")
    sampler: Sampler = Field(default_factory=Sampler)
    stopping: Stopping
    max_concurrent: int = Field(1, ge=1, le=100_000)
    rung_weight: float = Field(
        1.0,
        ge=1.0,
        le=100.0,
        description=(
            "How much more a trial one rung higher weighs when idle slots are shared out: a "
            "trial at rung r weighs rung_weight**r. 1.0 shares them evenly."
        ),
    )

    @property
    def max_epochs(self) -> int:
        return self.stopping.max_epochs

    def better(self, a: float, b: float) -> bool:
        """Whether metric value `a` is strictly better than `b` under `mode`."""
        return a > b if self.mode == "max" else a < b

    def reaches(self, value: float, target: float) -> bool:
        return value >= target if self.mode == "max" else value <= target

    def grid_size(self) -> int | None:
        """Number of distinct configurations, or None when some dimension is continuous."""
        size = 1
        for param in self.space.values():
            values = param.grid()
            if values is None:
                return None
            size *= len(values)
        return size


def _cross_problems(spec: SweepSpec) -> list[tuple[str, str]]:
    """Rules across sections, each reported at the field to change."""
    problems = []
    if spec.sampler.type == "grid":
        for name, param in spec.space.items():
            if param.grid() is None:
                problems.append((
                    f"space.{name}",
                    "the grid sampler needs a finite set of values: give a step, or use "
                    "type: int or categorical",
                ))
    if isinstance(spec.stopping, Median) and spec.stopping.warmup_epochs >= spec.max_epochs:
        problems.append(("stopping.warmup_epochs",
                         "must be below max_epochs, or no trial is ever stopped"))
    return problems


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    out = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(sweep)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field; check its spelling (see `thrifty tune validate --help`)"
        elif item["type"] == "union_tag_invalid":
            message = f"unknown type {item['input'].get('type')!r}; use asha, hyperband, median "\
                      "or none"
        elif item["type"] == "union_tag_not_found":
            message = "needs a type: asha, hyperband, median or none"
        out.append((path, message))
    return out


def validate_sweep(data: Any) -> SweepSpec:
    """A validated sweep from parsed YAML/JSON, or SweepSpecError listing every problem."""
    if not isinstance(data, dict):
        raise SweepSpecError([("(sweep)", f"expected a mapping of fields, got "
                                          f"{type(data).__name__}")])
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        raise SweepSpecError(_problems(err)) from None
    problems = _cross_problems(spec)
    if problems:
        raise SweepSpecError(problems)
    return spec


def parse_sweep(text: str) -> SweepSpec:
    """A validated sweep from YAML or JSON text (JSON is YAML, so one parser reads both)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = " ".join(str(err).split())
        raise SweepSpecError([("(sweep)", f"not valid YAML or JSON: {first}")]) from None
    return validate_sweep(data)


def load_sweep(path: Path | str) -> SweepSpec:
    """Read and validate a sweep file."""
    path = Path(path)
    if not path.is_file():
        raise ThriftyError(f"{path}: no such sweep file")
    try:
        return parse_sweep(path.read_text())
    except SweepSpecError as err:
        raise SweepSpecError([(f"{path}: {p}", m) for p, m in err.problems]) from None
