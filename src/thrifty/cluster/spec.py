"""The job spec: what a user submits, validated before anything is stored.

A spec arrives as YAML or JSON, from the CLI or over the API, written by hand. Every wrong field
is reported at once with its dotted path and how to fix it, so a user fixes a spec in one go
rather than one error per submission.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from thrifty.errors import ThriftyError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NUL_MESSAGE = ("contains a NUL byte (\\x00), which no command line, path or environment variable "
               "can hold; remove it")


def _without_nul(value: str | list[str] | None) -> str | list[str] | None:
    """`value` unchanged, or a ValueError when a NUL byte is in it: the operating system cuts a
    string there, so such a job could only ever fail to start."""
    texts = [value] if isinstance(value, str) else value or []
    if any("\x00" in text for text in texts):
        raise ValueError(NUL_MESSAGE)
    return value


class SpecError(ThriftyError):
    """A spec that does not validate; `problems` lists (field path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {path}: {message}" for path, message in problems)
        super().__init__(f"invalid job spec ({len(problems)} problem(s)):\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Entrypoint(_Strict):
    """A Python script or module with its arguments; or, for rigid jobs, any command."""

    script: str | None = Field(None, description="A Python file to run (relative to working_dir).")
    module: str | None = Field(None, description="A Python module to run, as python -m.")
    command: list[str] | None = Field(
        None, description="Rigid jobs only: any program and its arguments, as a list."
    )
    args: list[str] = Field(
        default_factory=list, description="Arguments appended to the script, module or command."
    )

    _no_nul = field_validator("script", "module", "command", "args")(_without_nul)

    @model_validator(mode="after")
    def _exactly_one(self) -> Entrypoint:
        given = [k for k in ("script", "module", "command") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of script (a .py file), module (python -m) or command "
                f"(a program and its arguments); got {', '.join(given) or 'none'}"
            )
        return self

    def argv(self, python: str) -> list[str]:
        """The command line of one replica, run with the interpreter `python`."""
        if self.script:
            return [python, self.script, *self.args]
        if self.module:
            return [python, "-m", self.module, *self.args]
        assert self.command is not None
        return [*self.command, *self.args]


class Resources(_Strict):
    """How many replicas (one per GPU, or per CPU slot) and of which kinds."""

    min_replicas: int = Field(
        1, ge=1, le=4096, description="Fewest replicas (GPUs or CPU slots) the job runs on."
    )
    max_replicas: int = Field(
        1, ge=1, le=4096, description="Most replicas; a rigid job always gets exactly this many."
    )
    gpu_kinds: list[str] = Field(
        default_factory=list, description="Allowed kinds; empty means any kind the cluster has."
    )
    cpu_only: bool = Field(False, description="Run on CPU slots, never on a GPU.")

    @model_validator(mode="after")
    def _consistent(self) -> Resources:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas "
                f"({self.min_replicas}); raise max_replicas or lower min_replicas"
            )
        if self.cpu_only and self.gpu_kinds and self.gpu_kinds != ["cpu"]:
            raise ValueError("cpu_only contradicts gpu_kinds; drop one of them")
        return self

    def allowed_kinds(self) -> tuple[str, ...] | None:
        """Kinds the job may run on, or None for any."""
        if self.cpu_only:
            return ("cpu",)
        return tuple(self.gpu_kinds) or None


class JobSpec(_Strict):
    """One training job as its owner describes it."""

    name: str = Field(
        pattern=NAME_PATTERN, description="Letters, digits, '.', '_' and '-', at most 63."
    )
    entrypoint: Entrypoint = Field(description="What each replica runs: exactly one of these.")
    working_dir: str = Field(
        ".", description="Folder the replicas start in; relative to the spec file's folder."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables for every replica."
    )
    resources: Resources = Field(
        default_factory=Resources, description="How many replicas, and where."
    )
    mode: Literal["adaptive", "rigid"] = Field(
        "adaptive", description="adaptive (thrifty.train, resized by the policy) or rigid."
    )
    preemptible: bool = Field(
        True, description="Whether the policy may stop it for others (adaptive jobs must be)."
    )
    owner: str = Field(
        "", max_length=64, description="Set by the server: the user whose token submitted it."
    )
    team: str = Field(
        "default", min_length=1, max_length=64, description="Team billed and budgeted for it."
    )
    priority: int = Field(0, ge=-100, le=100, description="-100 to 100; higher goes first.")
    checkpoint_dir: str | None = Field(
        None, description="Where checkpoints go (default: a folder of the job under the home)."
    )
    max_restarts: int = Field(
        3, ge=0, le=100, description="Failures it is restarted after before it counts as failed."
    )
    batch_size: int | None = Field(
        None, ge=1, le=2**31 - 1,
        description="Total batch the owner asks for, for policies that honour it.",
    )
    deadline_s: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="Seconds after submission by which the job should be finished.",
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        if any("\x00" in k or "\x00" in v for k, v in env.items()):
            raise ValueError(NUL_MESSAGE)
        bad = [k for k in env if not _ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"not valid variable names: {', '.join(map(repr, bad))}")
        reserved = [k for k in env if k.startswith("THRIFTY_") or k in _LAUNCHER_VARS]
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} are set by the executor for every replica; remove them"
            )
        return env

    _no_nul = field_validator("working_dir", "checkpoint_dir")(_without_nul)

    @model_validator(mode="after")
    def _mode_rules(self) -> JobSpec:
        if self.mode == "adaptive" and not self.preemptible:
            raise ValueError(
                "an adaptive job is resized by restarting it, so it cannot be non-preemptible; "
                "set mode: rigid or preemptible: true"
            )
        if self.mode == "adaptive" and self.entrypoint.command:
            raise ValueError(
                "an adaptive job runs Python with thrifty.train: give entrypoint.script or "
                "entrypoint.module, or set mode: rigid for any other program"
            )
        return self

    @property
    def adaptive(self) -> bool:
        return self.mode == "adaptive"

    def requested_replicas(self) -> int:
        """A rigid job gets exactly its maximum; an adaptive one starts from its minimum."""
        return self.resources.max_replicas if not self.adaptive else self.resources.min_replicas


_LAUNCHER_VARS = {
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
}


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    out = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(spec)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field; check its spelling (see `thrifty submit --help`)"
        out.append((path, message))
    return out


def validate_spec(data: Any, owner: str | None = None) -> JobSpec:
    """A validated spec from parsed YAML/JSON; `owner`, when given, overrides the spec's."""
    if not isinstance(data, dict):
        raise SpecError([("(spec)", f"expected a mapping of fields, got {type(data).__name__}")])
    if owner is not None:
        data = {**data, "owner": owner}
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_problems(err)) from None


def parse_spec(text: str, owner: str | None = None) -> JobSpec:
    """A validated spec from YAML or JSON text (JSON is YAML, so one parser reads both)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError([("(spec)", f"not valid YAML or JSON: {err}")]) from None
    return validate_spec(data, owner)


def load_spec(path: Path, owner: str | None = None) -> JobSpec:
    """Read and validate a spec file; a relative working_dir is taken from the file's folder."""
    if not path.is_file():
        raise ThriftyError(f"{path}: no such spec file")
    spec = parse_spec(path.read_text(), owner)
    folder = Path(spec.working_dir)
    if not folder.is_absolute():
        spec = spec.model_copy(update={"working_dir": str((path.parent / folder).resolve())})
    return spec


def spec_json(spec: JobSpec) -> str:
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True)
