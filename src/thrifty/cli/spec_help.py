"""The job spec's fields as `thrifty submit --help` lists them, generated from `JobSpec`'s own
field descriptions so that the help cannot drift from what the server accepts."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from rich.markup import escape

from thrifty.cluster.spec import JobSpec


def _default(field: Any) -> str:
    """`required`, `default: <value>` as it would be written in the spec, or nothing for an
    optional field without a value (None, an empty list or mapping, a nested model)."""
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined or value is None or isinstance(value, BaseModel) or (
            isinstance(value, list | dict) and not value):
        return ""
    return f"default: {json.dumps(value)}"


def spec_fields(model: type[BaseModel] = JobSpec, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field name, its description with the default) for every field, nested models'
    fields under their parent's name."""
    rows: list[tuple[str, str]] = []
    for name, field in model.model_fields.items():
        what = field.description or ""
        default = _default(field)
        rows.append((prefix + name, f"{what} ({default})" if default else what))
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            rows += spec_fields(sub, f"{prefix}{name}.")
    return rows


def spec_help() -> str:
    """The paragraph of `thrifty submit --help` that lists the spec's fields, one a line."""
    rows = spec_fields()
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name:<{width}}  {escape(text)}" for name, text in rows]
    return "Spec fields (YAML or JSON; see examples/jobs/):\n" + "\n".join(lines)
