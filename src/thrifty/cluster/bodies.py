"""Reading a job spec's text, JSON or YAML, with its size and shape bounded first.

Python's JSON decoder and PyYAML's composer recurse once per level of nesting, and YAML's aliases
can make a small text expand into millions of nodes: either turns a hostile body into a
RecursionError or a stuck worker. A job spec is a few levels deep and a few dozen values, so the
text is measured without recursion (JSON's brackets outside strings; YAML's parser events, which
come from a flat state machine) and refused with a `SpecError` naming the limit before any
recursive parser sees it. The API and the CLI read specs through here; this module imports
nothing heavy, so `thrifty submit` stays quick.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import yaml

from thrifty.cluster.spec import SpecError

MAX_SPEC_BYTES = 1 << 20  # a spec is a few hundred bytes; anything this big is a mistake
MAX_DEPTH = 32  # levels of nested mappings and lists; a job spec uses three
MAX_NODES = 10_000  # values, once YAML aliases are expanded; a spec has a few dozen

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")
_YAML_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_YAML_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def too_deep(depth: int) -> str:
    return (f"nested more than {MAX_DEPTH} levels deep (at least {depth}); a job spec needs a "
            "few levels: flatten it")


def _too_deep(depth: int) -> SpecError:
    return SpecError([("(spec)", too_deep(depth))])


def _too_big(nodes: int) -> SpecError:
    return SpecError([("(spec)", f"expands to more than {MAX_NODES} values (at least {nodes}, "
                                 "counting what its aliases repeat); write the spec out plainly")])


def json_depth(text: str) -> int:
    """How deeply a JSON text nests, counted without parsing it (exact for valid JSON)."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub('""', text)):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"the number {literal[:40]} does not fit a 64-bit float")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; give a finite number")


def load_json(text: str) -> Any:
    """The value of a JSON text no deeper than MAX_DEPTH, with finite numbers only."""
    depth = json_depth(text)
    if depth > MAX_DEPTH:
        raise _too_deep(depth)
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except ValueError as err:
        raise SpecError([("(spec)", f"not valid JSON: {err}")]) from None


def check_yaml_shape(text: str) -> None:
    """Raise SpecError unless a YAML text (of one or more documents) nests at most MAX_DEPTH
    levels and expands to at most MAX_NODES values, aliases counted as what they repeat."""
    open_: list[list[Any]] = []  # per open collection: [anchor, height below it, values in it]
    shapes: dict[str, tuple[int, int]] = {}  # anchor -> (height, values) of what it names

    def close(anchor: str | None, height: int, nodes: int) -> None:
        if anchor:
            shapes[anchor] = (height, nodes)
        if open_:
            parent = open_[-1]
            parent[1], parent[2] = max(parent[1], height), parent[2] + nodes
            if len(open_) + height > MAX_DEPTH:
                raise _too_deep(len(open_) + height)
            if parent[2] > MAX_NODES:
                raise _too_big(parent[2])

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, _YAML_OPEN):
                open_.append([event.anchor, 0, 1])
                if len(open_) > MAX_DEPTH:
                    raise _too_deep(len(open_))
            elif isinstance(event, _YAML_CLOSE):
                anchor, height, nodes = open_.pop()
                close(anchor, height + 1, nodes)
            elif isinstance(event, yaml.ScalarEvent):
                close(event.anchor, 0, 1)
            elif isinstance(event, yaml.AliasEvent):
                close(None, *shapes.get(event.anchor or "", (0, 1)))
    except yaml.YAMLError as err:
        raise SpecError([("(spec)", f"not valid YAML: {err}")]) from None


def load_yaml(text: str) -> Any:
    """The value of a YAML text (JSON is YAML too) within MAX_DEPTH and MAX_NODES."""
    check_yaml_shape(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError([("(spec)", f"not valid YAML: {err}")]) from None


__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_SPEC_BYTES", "check_yaml_shape", "json_depth",
           "load_json", "load_yaml", "too_deep"]
