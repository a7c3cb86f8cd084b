"""Price sheets: what an hour of a GPU or CPU costs, on-premises or from a cloud catalogue.

A sheet is TOML. On-premises rates are per GPU-hour (and CPU-hour) per simulator GPU kind; a cloud
catalogue lists instances with on-demand and spot prices per instance-hour, inline or from a CSV in
the format of `prices/cloud-gpu-prices.csv`:

    name = "lab"
    pue = 1.58                     # power usage effectiveness of the data centre
    region = "ger"                 # carbon region (a series name or a CSV), optional
    catalogue = "cloud.csv"        # cloud catalogue CSV, relative to this file, optional
    [energy]
    busy_utilisation = 1.0         # fraction of board power drawn while training
    idle_utilisation = 0.15        # ... while allocated but idle
    [onprem.aws]
    accelerator = "T4"             # the board, to look up its power
    usd_per_gpu_hour = 0.978
    usd_per_cpu_hour = 0.02
    watts = 70                     # optional: power of one device, instead of the board table's
    [onprem.cpu]                   # the local executor's CPU slots: one slot is one core
    usd_per_cpu_hour = 0.053
    watts = 6
    [[cloud]]
    provider = "aws"
    instance_type = "g4dn.xlarge"
    accelerator = "T4"
    accelerator_count = 1
    on_demand_usd_per_hour = 0.526
    spot_usd_per_hour = 0.24       # optional

Every error names the file and the entry at fault, so that a sheet with one typo never prices a
month of jobs silently at zero.
"""

from __future__ import annotations

import csv
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thrifty.errors import InputError, ThriftyError

# The boards behind the simulator's GPU kinds (see sim/cluster.py and shared/data/README.md).
KIND_ACCELERATOR: Mapping[str, str] = {"aws": "T4", "rtx": "RTX2080Ti", "dgx-ext": "A100-40GB"}

# The local executor's slots when a machine has no GPU: one slot is one CPU core, priced per
# CPU-hour (see OnPremRate) rather than per GPU-hour.
CPU_KIND = "cpu"

DEFAULT_PUE = 1.58  # an average data centre (Uptime Institute surveys 2020-2024)


@dataclass(frozen=True)
class OnPremRate:
    """What one GPU (and one CPU core) of a kind costs per hour, everything included."""

    kind: str
    usd_per_gpu_hour: float
    usd_per_cpu_hour: float = 0.0
    accelerator: str = ""
    watts: float | None = None  # one device's power; None: the board table's figure


@dataclass(frozen=True)
class CloudOffer:
    """One cloud instance type: `accelerator` is "" for a CPU-only instance."""

    provider: str
    instance_type: str
    region: str
    accelerator: str
    accelerator_count: int
    vcpus: int
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float | None = None

    def usd_per_hour(self, spot: bool) -> float | None:
        return self.spot_usd_per_hour if spot else self.on_demand_usd_per_hour

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.instance_type}"


@dataclass(frozen=True)
class PriceSheet:
    name: str
    onprem: Mapping[str, OnPremRate] = field(default_factory=dict)
    cloud: tuple[CloudOffer, ...] = ()
    pue: float = DEFAULT_PUE
    region: str | None = None
    busy_utilisation: float = 1.0
    idle_utilisation: float = 0.15

    def usd_per_gpu_hour(self, kind: str) -> float:
        """USD per hour of one device of `kind`: a GPU, or a core for the CPU kind."""
        try:
            rate = self.onprem[kind]
        except KeyError:
            known = ", ".join(sorted(self.onprem)) or "none"
            raise ThriftyError(
                f"price sheet '{self.name}' has no price for GPU kind '{kind}' (priced: {known}); "
                f"add [onprem.{kind}] usd_per_gpu_hour"
            ) from None
        return rate.usd_per_cpu_hour if kind == CPU_KIND else rate.usd_per_gpu_hour

    def accelerator(self, kind: str) -> str:
        """The board of a kind, to look up its power: the sheet's word, else the built-in map."""
        rate = self.onprem.get(kind)
        if rate is not None and rate.accelerator:
            return rate.accelerator
        return KIND_ACCELERATOR.get(kind, kind)

    def node_usd_per_gpu_hour(self, kind: str, num_gpus: int, node_usd_per_hour: float) -> float:
        """A node's own price (USD per node-hour) wins over the sheet's rate for its kind."""
        if node_usd_per_hour > 0:
            return node_usd_per_hour / max(num_gpus, 1)
        return self.usd_per_gpu_hour(kind)


def default_price_sheet() -> PriceSheet:
    """Rates for the simulator's kinds when no sheet is given.

    aws: an AWS g4dn.12xlarge (4 × T4) on demand, USD 3.912/h ÷ 4; dgx-ext: a p4d.24xlarge
    (8 × A100 40 GB) on demand, USD 21.9576/h ÷ 8 (both from prices/cloud-gpu-prices.csv).
    rtx: no catalogue lists the RTX 2080 Ti, so this is an assumed on-premises rate: an 8-GPU
    server of about USD 25 000 written off over three years (≈ USD 0.12 per GPU-hour) plus power,
    cooling, space and staff. cpu (one core of the local executor): an m8i.large (2 vCPUs) on
    demand, USD 0.10584/h ÷ 2; 6 W a core is an assumption (a 350 W, 56-core server CPU).
    Board powers are the makers' rated figures, so that the control plane needs no data folder.
    Pass a sheet of your own for real figures.
    """
    return PriceSheet(
        name="default",
        onprem={
            "aws": OnPremRate("aws", 3.912 / 4, 0.0, "T4", 70.0),
            "rtx": OnPremRate("rtx", 0.30, 0.0, "RTX2080Ti", 250.0),
            "dgx-ext": OnPremRate("dgx-ext", 21.9576 / 8, 0.0, "A100-40GB", 400.0),
            CPU_KIND: OnPremRate(CPU_KIND, 0.0, 0.10584 / 2, "", 6.0),
        },
        region="ger",
    )


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _price(path: str, value: Any, where: str, *, optional: bool = False) -> float | None:
    if value is None or value == "":
        if optional:
            return None
        raise InputError(path, "price missing", field=where)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(path, f"expected a price in USD, got {value!r}", field=where)
    try:
        number = float(value)
    except ValueError:
        raise InputError(path, f"expected a price in USD, got {value!r}", field=where) from None
    if not math.isfinite(number) or number < 0:
        raise InputError(path, f"price must be a non-negative number, got {value!r}", field=where)
    return number


def _fraction(path: str, value: Any, where: str, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
        raise InputError(path, f"must be a number between 0 and {high:g}, got {value!r}",
                         field=where)
    return float(value)


def _count(path: str, value: Any, where: str) -> int:
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        raise InputError(path, f"expected a count, got {value!r}", field=where) from None
    if number < 0 or number != float(value):
        raise InputError(path, f"expected a non-negative whole count, got {value!r}", field=where)
    return number


def _offer(path: str, row: Mapping[str, Any], where: str) -> CloudOffer:
    for column in ("provider", "instance_type", "on_demand_usd_per_hour"):
        if row.get(column) in (None, ""):
            raise InputError(path, f"'{column}' missing", field=where)
    low = _price(path, row.get("spot_usd_per_hour_low"), f"{where}.spot_usd_per_hour_low",
                 optional=True)
    high = _price(path, row.get("spot_usd_per_hour_high"), f"{where}.spot_usd_per_hour_high",
                  optional=True)
    spot = _price(path, row.get("spot_usd_per_hour"), f"{where}.spot_usd_per_hour", optional=True)
    if spot is None and low is not None:
        spot = low if high is None else (low + high) / 2  # the middle of the observed range
    accelerator = str(row.get("accelerator") or "").strip()
    count = _count(path, row.get("accelerator_count", 1 if accelerator else 0),
                   f"{where}.accelerator_count")
    if accelerator and count < 1:
        raise InputError(path, f"accelerator {accelerator!r} with count 0",
                         field=f"{where}.accelerator_count")
    return CloudOffer(
        provider=str(row["provider"]).strip(),
        instance_type=str(row["instance_type"]).strip(),
        region=str(row.get("region") or "").strip(),
        accelerator=accelerator,
        accelerator_count=count if accelerator else 0,
        vcpus=_count(path, row.get("vcpus", 0), f"{where}.vcpus"),
        on_demand_usd_per_hour=float(
            _price(path, row["on_demand_usd_per_hour"], f"{where}.on_demand_usd_per_hour") or 0.0
        ),
        spot_usd_per_hour=spot,
    )


def load_catalogue(path: Path) -> tuple[CloudOffer, ...]:
    """Cloud offers from a CSV in the format of `prices/cloud-gpu-prices.csv`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "catalogue file not found")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        need = ("provider", "instance_type", "on_demand_usd_per_hour")
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(str(path), f"missing column(s) {', '.join(missing)}", line=1)
        offers = []
        for line, row in enumerate(reader, start=2):
            try:
                offers.append(_offer(str(path), row, row.get("instance_type") or f"row {line}"))
            except InputError as err:
                raise InputError(str(path), str(err).split(": ", 1)[1], line) from None
    if not offers:
        raise InputError(str(path), "catalogue lists no instances")
    return tuple(offers)


def load_price_sheet(path: Path) -> PriceSheet:
    """Read and validate a TOML price sheet (see the module docstring for the format)."""
    path = Path(path)
    p = str(path)
    if not path.is_file():
        raise InputError(p, "price sheet not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise InputError(p, f"not valid TOML: {err}") from None
    unknown = set(data) - {"name", "pue", "region", "catalogue", "energy", "onprem", "cloud"}
    if unknown:
        raise InputError(p, f"unknown key(s) {', '.join(sorted(unknown))}")
    pue = data.get("pue", DEFAULT_PUE)
    if isinstance(pue, bool) or not isinstance(pue, int | float) or not 1.0 <= pue <= 3.0:
        raise InputError(p, f"must be a number from 1.0 to 3.0, got {pue!r}", field="pue")
    energy = data.get("energy", {})
    if not isinstance(energy, dict):
        raise InputError(p, "must be a table", field="energy")
    extra = set(energy) - {"busy_utilisation", "idle_utilisation"}
    if extra:
        raise InputError(p, f"unknown key(s) {', '.join(sorted(extra))}", field="energy")
    onprem: dict[str, OnPremRate] = {}
    raw_onprem = data.get("onprem", {})
    if not isinstance(raw_onprem, dict):
        raise InputError(p, "must be a table of [onprem.<kind>] tables", field="onprem")
    for kind, entry in raw_onprem.items():
        where = f"onprem.{kind}"
        if not isinstance(entry, dict):
            raise InputError(p, "must be a table", field=where)
        extra = set(entry) - {"accelerator", "usd_per_gpu_hour", "usd_per_cpu_hour", "watts"}
        if extra:
            raise InputError(p, f"unknown key(s) {', '.join(sorted(extra))}", field=where)
        watts = entry.get("watts")
        if watts is not None and (isinstance(watts, bool) or not isinstance(watts, int | float)
                                  or not math.isfinite(watts) or watts <= 0):
            raise InputError(p, f"must be a positive number of watts, got {watts!r}",
                             field=f"{where}.watts")
        onprem[kind] = OnPremRate(
            kind=kind,
            usd_per_gpu_hour=float(
                _price(p, entry.get("usd_per_gpu_hour"), f"{where}.usd_per_gpu_hour",
                       optional=kind == CPU_KIND) or 0.0
            ),
            usd_per_cpu_hour=float(
                _price(p, entry.get("usd_per_cpu_hour", 0.0), f"{where}.usd_per_cpu_hour") or 0.0
            ),
            accelerator=str(entry.get("accelerator", KIND_ACCELERATOR.get(kind, ""))),
            watts=None if watts is None else float(watts),
        )
    offers: list[CloudOffer] = []
    raw_cloud = data.get("cloud", [])
    if not isinstance(raw_cloud, list):
        raise InputError(p, "must be a list of [[cloud]] tables", field="cloud")
    for i, entry in enumerate(raw_cloud):
        if not isinstance(entry, dict):
            raise InputError(p, "must be a table", field=f"cloud[{i}]")
        offers.append(_offer(p, entry, f"cloud[{i}]"))
    if "catalogue" in data:
        catalogue = path.parent / str(data["catalogue"])
        if not catalogue.is_file():
            raise InputError(p, f"catalogue file {catalogue} not found", field="catalogue")
        offers.extend(load_catalogue(catalogue))
    if not onprem and not offers:
        raise InputError(p, "prices nothing: add [onprem.<kind>] tables or [[cloud]] offers")
    region = data.get("region")
    return PriceSheet(
        name=str(data.get("name", path.stem)),
        onprem=onprem,
        cloud=tuple(offers),
        pue=float(pue),
        region=None if region is None else str(region),
        busy_utilisation=_fraction(p, energy.get("busy_utilisation", 1.0),
                                   "energy.busy_utilisation"),
        idle_utilisation=_fraction(p, energy.get("idle_utilisation", 0.15),
                                   "energy.idle_utilisation"),
    )
