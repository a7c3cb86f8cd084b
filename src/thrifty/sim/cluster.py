"""Simulated clusters: nodes with their GPU kind, and the simulation settings tied to their data.

Two clusters come built in, as their papers evaluated them: `pollux64` (16 nodes × 4 T4, Pollux
setting) and `sia-hetero64` (6 × 4 T4 + 3 × 8 RTX 2080Ti + 2 × 8 A100, Sia setting). Any other
cluster is a TOML file:

    name = "lab"
    profiles = "sia"              # measured data to use: "pollux" or "sia"
    restart_delay = 30            # seconds per re-allocation, or a table per application
    [slowdown]                    # optional: measured throughput is divided by these
    cifar10 = 1.8
    [local_bsz_caps.deepspeech2]  # optional: most samples per GPU, by kind ("*": every kind)
    rtx = 57
    [[nodes]]
    kind = "aws"                  # a GPU kind with profiles: aws, rtx, dgx-ext
    count = 4                     # nodes of this shape
    gpus = 4                      # GPUs per node
    price_per_hour = 3.912        # optional, USD per node-hour
    [autoscale]                   # optional: rent these nodes from a cloud as jobs need them
    min_nodes = 0                 # (with `thrifty simulate --autoscale`; see sim/autoscale.py)
    max_nodes = 16                # default: every node above; `count` caps each shape
    provision_delay_s = 180       # seconds from request to usable, billed from request
    grow_threshold = 0.5          # add while marginal goodput per USD ≥ this × the average
    shrink_threshold = 0.25       # release an idle node worth less than this × the average
    idle_timeout_s = 300          # release an idle node after this long anyway
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thrifty.errors import InputError, ThriftyError
from thrifty.policy.autoscale import AutoscaleConfig
from thrifty.sim.autoscale import parse_autoscale

PROFILE_KINDS: Mapping[str, tuple[str, ...]] = {
    "pollux": ("aws",),
    "sia": ("aws", "rtx", "dgx-ext"),
}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    gpu_kind: str
    num_gpus: int
    price_per_hour: float = 0.0


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster and the simulation settings its profiles were measured under.

    `restart_delay` is seconds lost per (re)start by application (key "*" for the rest);
    `slowdown` divides the profiled throughput per application (calibration to real runs);
    `local_bsz_caps` limits the per-GPU batch of an application on a kind (key "*" for all kinds).
    `autoscale` is how the cluster scales when rented from a cloud (None: the defaults); `nodes`
    are then the most it may hold.
    """

    name: str
    nodes: tuple[NodeSpec, ...]
    profiles: str = "pollux"
    restart_delay: Mapping[str, float] = field(default_factory=lambda: {"*": 30.0})
    slowdown: Mapping[str, float] = field(default_factory=dict)
    local_bsz_caps: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    autoscale: AutoscaleConfig | None = None

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ThriftyError(f"cluster '{self.name}' has no nodes")
        if self.profiles not in PROFILE_KINDS:
            raise ThriftyError(
                f"cluster '{self.name}': profiles must be one of {', '.join(PROFILE_KINDS)}"
            )
        allowed = PROFILE_KINDS[self.profiles]
        for node in self.nodes:
            if node.gpu_kind not in allowed:
                raise ThriftyError(
                    f"cluster '{self.name}': node '{node.name}' has unknown GPU kind "
                    f"'{node.gpu_kind}'; the {self.profiles} profiles know {', '.join(allowed)}"
                )

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted({n.gpu_kind for n in self.nodes}))

    @property
    def num_gpus(self) -> int:
        return sum(n.num_gpus for n in self.nodes)

    def delay(self, application: str) -> float:
        return float(self.restart_delay.get(application, self.restart_delay.get("*", 30.0)))

    def local_cap(self, application: str, kind: str) -> int | None:
        caps = self.local_bsz_caps.get(application, {})
        return caps.get(kind, caps.get("*"))


def _nodes(kind: str, count: int, gpus: int, price: float, start: int = 0) -> list[NodeSpec]:
    return [NodeSpec(f"{kind}-{start + i}", kind, gpus, price) for i in range(count)]


def pollux64() -> ClusterSpec:
    """16 AWS g4dn.12xlarge nodes (4 × T4): the Pollux paper's simulated cluster."""
    return ClusterSpec(
        name="pollux64",
        nodes=tuple(_nodes("aws", 16, 4, 3.912)),
        profiles="pollux",
        restart_delay={"*": 30.0},
        local_bsz_caps={"yolov3": {"*": 8}},
    )


def sia_hetero64() -> ClusterSpec:
    """Sia's heterogeneous 64-GPU cluster, with the per-model settings of Sia's simulator."""
    return ClusterSpec(
        name="sia-hetero64",
        nodes=tuple(
            _nodes("aws", 6, 4, 3.912) + _nodes("rtx", 3, 8, 0.0) + _nodes("dgx-ext", 2, 8, 0.0)
        ),
        profiles="sia",
        restart_delay={
            "cifar10": 50.0, "deepspeech2": 25.0, "bert": 120.0, "yolov3": 80.0,
            "imagenet": 250.0, "ncf": 15.0, "*": 30.0,
        },
        slowdown={"cifar10": 1.8, "ncf": 1.5, "*": 1.2},
        local_bsz_caps={"deepspeech2": {"rtx": 57}},
    )


BUILTIN_CLUSTERS = {"pollux64": pollux64, "sia-hetero64": sia_hetero64}


def _positive(path: str, value: Any, what: str, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or value < (1 if integer else 0):
        kind = "a positive integer" if integer else "a non-negative number"
        raise InputError(path, f"must be {kind}, got {value!r}", field=what)
    return value


def _caps(path: str, raw: Any, kinds: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """`[local_bsz_caps.<application>]` tables of per-GPU batch caps by kind ("*": any kind)."""
    if not isinstance(raw, dict):
        raise InputError(path, "must be a table of [local_bsz_caps.<application>] tables",
                         field="local_bsz_caps")
    caps: dict[str, dict[str, int]] = {}
    for app, table in raw.items():
        where = f"local_bsz_caps.{app}"
        if not isinstance(table, dict):
            raise InputError(path, "must be a table of GPU kind = samples per GPU", field=where)
        for kind in table:
            if kind != "*" and kind not in kinds:
                raise InputError(path, f"unknown GPU kind {kind!r} (known: {', '.join(kinds)}, "
                                 "or \"*\" for all)", field=f"{where}.{kind}")
        caps[app] = {k: int(_positive(path, v, f"{where}.{k}", integer=True))
                     for k, v in table.items()}
    return caps


def load_cluster(name_or_path: str) -> ClusterSpec:
    """A built-in cluster by name, or one described by a TOML file."""
    if name_or_path in BUILTIN_CLUSTERS:
        return BUILTIN_CLUSTERS[name_or_path]()
    path = Path(name_or_path)
    if not path.is_file():
        raise InputError(
            name_or_path,
            f"no such cluster file; built-in clusters are {', '.join(BUILTIN_CLUSTERS)}",
        )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise InputError(str(path), f"not valid TOML: {err}") from None
    p = str(path)
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise InputError(p, "needs at least one [[nodes]] table", field="nodes")
    profiles = str(data.get("profiles", "sia"))
    if profiles not in PROFILE_KINDS:
        raise InputError(p, f"must be one of {', '.join(PROFILE_KINDS)}", field="profiles")
    nodes: list[NodeSpec] = []
    for i, entry in enumerate(raw_nodes):
        where = f"nodes[{i}]"
        if not isinstance(entry, dict) or "kind" not in entry:
            raise InputError(p, "needs a 'kind' (GPU kind)", field=where)
        if entry["kind"] not in PROFILE_KINDS[profiles]:
            raise InputError(
                p, f"unknown GPU kind {entry['kind']!r}; the {profiles} profiles know "
                f"{', '.join(PROFILE_KINDS[profiles])}", field=f"{where}.kind",
            )
        unknown = set(entry) - {"kind", "count", "gpus", "price_per_hour"}
        if unknown:
            raise InputError(p, f"unknown key(s) {', '.join(sorted(unknown))}", field=where)
        count = int(_positive(p, entry.get("count", 1), f"{where}.count", integer=True))
        gpus = int(_positive(p, entry.get("gpus", 4), f"{where}.gpus", integer=True))
        price = float(_positive(p, entry.get("price_per_hour", 0.0), f"{where}.price_per_hour"))
        start = sum(1 for n in nodes if n.gpu_kind == entry["kind"])
        nodes.extend(_nodes(str(entry["kind"]), count, gpus, price, start))
    delay = data.get("restart_delay", 30.0)
    if isinstance(delay, dict):
        restart = {k: _positive(p, v, f"restart_delay.{k}") for k, v in delay.items()}
        restart.setdefault("*", 30.0)
    else:
        restart = {"*": _positive(p, delay, "restart_delay")}
    slowdown = {k: _positive(p, v, f"slowdown.{k}") for k, v in data.get("slowdown", {}).items()}
    if any(v == 0 for v in slowdown.values()):
        raise InputError(p, "a slowdown must be positive", field="slowdown")
    caps = _caps(p, data.get("local_bsz_caps", {}), PROFILE_KINDS[profiles])
    autoscale = _autoscale(p, data["autoscale"], nodes) if "autoscale" in data else None
    try:
        return ClusterSpec(
            name=str(data.get("name", path.stem)),
            nodes=tuple(nodes),
            profiles=profiles,
            restart_delay=restart,
            slowdown=slowdown,
            local_bsz_caps=caps,
            autoscale=autoscale,
        )
    except ThriftyError as err:
        raise InputError(p, str(err)) from None


def _autoscale(path: str, raw: Any, nodes: list[NodeSpec]) -> AutoscaleConfig:
    """The `[autoscale]` table, checked against the nodes it may rent."""
    config = parse_autoscale(path, raw)
    for name in ("min_nodes", "max_nodes"):
        value = getattr(config, name)
        if value is not None and value > len(nodes):
            raise InputError(path, f"{value} exceeds the {len(nodes)} nodes listed; raise the "
                             "[[nodes]] count (the most that may be rented)",
                             field=f"autoscale.{name}")
    shapes: dict[str, tuple[int, float]] = {}
    for node in nodes:
        shape = (node.num_gpus, node.price_per_hour)
        if shapes.setdefault(node.gpu_kind, shape) != shape:
            raise InputError(path, f"nodes of GPU kind {node.gpu_kind!r} differ in gpus or "
                             "price_per_hour; an autoscaled cluster has one shape per kind",
                             field="nodes")
    return config
