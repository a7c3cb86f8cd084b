"""`Allocation`: what the scheduler grants one job, GPUs per node, all of one kind."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from thrifty.errors import ThriftyError


@dataclass(frozen=True)
class Allocation:
    """GPUs granted per node (`{"aws-3": 4, "aws-7": 2}`), all of kind `kind`."""

    gpus: Mapping[str, int]
    kind: str

    def __post_init__(self) -> None:
        if any(count < 1 for count in self.gpus.values()):
            raise ThriftyError(f"an allocation lists nodes with no GPUs: {dict(self.gpus)}")

    @property
    def num_replicas(self) -> int:
        return sum(self.gpus.values())

    @property
    def num_nodes(self) -> int:
        return len(self.gpus)

    def placement(self) -> tuple[int, ...]:
        """GPUs per node, in node order: the shape the profiles are keyed by."""
        return tuple(self.gpus[n] for n in sorted(self.gpus))

    def same_as(self, other: Allocation | None) -> bool:
        return other is not None and self.kind == other.kind and dict(self.gpus) == dict(
            other.gpus
        )

    def to_dict(self) -> dict[str, Any]:
        return {"gpus": dict(self.gpus), "kind": self.kind}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Allocation:
        try:
            gpus = {str(k): int(v) for k, v in data["gpus"].items()}
            return cls(gpus=gpus, kind=str(data["kind"]))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ThriftyError(
                f"an allocation must be {{'gpus': {{node: count}}, 'kind': str}}, got {data!r} "
                f"({err})"
            ) from None

    def to_json(self) -> str:
        """The form an executor hands a job (`Env.ALLOCATION`)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Allocation:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ThriftyError(f"an allocation is not JSON: {text!r} ({err})") from None
        if not isinstance(data, Mapping):
            raise ThriftyError(f"an allocation must be a JSON object, got {text!r}")
        return cls.from_dict(data)
