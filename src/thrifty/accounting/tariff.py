"""A tariff: the price sheet, power model and grid intensity together, as a meter needs them.

Built here for the simulator and the live control plane alike, from files someone names: a price
sheet (default: the built-in one), the data folder's board-power table, and a grid intensity
given as a number, a region with a series in the data folder, a CSV file or a country code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from thrifty.accounting.carbon import (
    CarbonIntensity,
    StaticIntensity,
    country_intensity,
    load_intensity_series,
)
from thrifty.accounting.energy import PowerModel, load_board_power
from thrifty.accounting.prices import PriceSheet, default_price_sheet, load_price_sheet
from thrifty.errors import ThriftyError

BOARD_POWER = Path("prices") / "gpu-power.csv"  # inside the data folder
CARBON_DIR = Path("carbon")  # inside the data folder: one intensity series per region


@dataclass(frozen=True)
class Tariff:
    sheet: PriceSheet
    power: PowerModel
    intensity: CarbonIntensity

    def gpu_usd_per_hour(self, kind: str, num_gpus: int, node_usd_per_hour: float) -> float:
        """USD per hour of one GPU on a node: the node's own price, else the sheet's rate."""
        return self.sheet.node_usd_per_gpu_hour(kind, num_gpus, node_usd_per_hour)

    def kg_per_gpu_hour(self, kind: str, start_s: float, end_s: float) -> float:
        """kg CO2e per hour of one training GPU of `kind` between the two times."""
        return self.power.kw_per_gpu(kind) * self.intensity.mean_g_per_kwh(start_s, end_s) / 1000


def power_model(sheet: PriceSheet, board_watts: dict[str, float], kinds: tuple[str, ...] = ()
                ) -> PowerModel:
    """The sheet's PUE and utilisations over the given boards; `kinds` are checked now, so that a
    kind without a known board fails before a simulation starts. A kind whose sheet entry gives
    its own watts uses them, whatever the board table says."""
    accelerators = {k: sheet.accelerator(k) for k in (*sheet.onprem, *kinds)}
    own = {k: r.watts for k, r in sheet.onprem.items() if r.watts is not None}
    accelerators.update({k: f"{k} (price sheet)" for k in own})
    watts = {**board_watts, **{f"{k} (price sheet)": w for k, w in own.items()}}
    model = PowerModel(watts, accelerators, sheet.pue, sheet.busy_utilisation,
                       sheet.idle_utilisation)
    for kind in kinds:
        model.watts(kind)
    return model


def carbon_regions(data_root: Path) -> dict[str, Path]:
    """Series shipped in the data folder, by region: `ger_2020-06.csv` is region `ger`."""
    folder = Path(data_root) / CARBON_DIR
    if not folder.is_dir():
        return {}
    return {p.stem.split("_")[0]: p for p in sorted(folder.glob("*.csv"))}


def resolve_intensity(spec: str | None, data_root: Path | None) -> CarbonIntensity:
    """A number (static gCO2/kWh), a region with a series in the data folder, a CSV file, or a
    country's ISO 3166 alpha-3 code (its yearly mean, from CodeCarbon's data)."""
    if spec is None or not str(spec).strip():
        raise ThriftyError("no carbon region given: use --carbon REGION|CSV|COUNTRY|gCO2/kWh")
    text = str(spec).strip()
    try:
        return StaticIntensity(float(text), name=f"{float(text):g} gCO2/kWh")
    except ValueError:
        pass
    regions = carbon_regions(data_root) if data_root is not None else {}
    if text in regions:
        return load_intensity_series(regions[text], name=text)
    if text.endswith(".csv") and Path(text).is_file():
        return load_intensity_series(Path(text))
    if len(text) == 3 and text.isalpha() and text.isupper():
        return country_intensity(text)
    known = ", ".join(regions) or "none"
    raise ThriftyError(
        f"unknown carbon region '{text}' (regions with a series: {known}; or give a CSV file, "
        "a country code such as DEU, or a static intensity in gCO2/kWh)"
    )


def load_sheet(prices: Path | None) -> PriceSheet:
    """The price sheet at `prices`, or the built-in one."""
    return default_price_sheet() if prices is None else load_price_sheet(prices)


def board_watts(data_root: Path | None, required: bool = True) -> dict[str, float]:
    """The data folder's board-power table; {} when not `required` and there is none (a price
    sheet's own watts then carry the kinds it lists)."""
    path = None if data_root is None else Path(data_root) / BOARD_POWER
    if not required and (path is None or not path.is_file()):
        return {}
    if path is None:
        raise ThriftyError("board power needs the data folder: set THRIFTY_DATA or --data")
    return load_board_power(path)


def load_tariff(
    data_root: Path,
    kinds: tuple[str, ...],
    prices: Path | None = None,
    carbon: str | None = None,
) -> Tariff:
    """Price sheet (default: the built-in one), board power from the data folder, and the grid
    intensity (`carbon`, else the sheet's region). Every kind is checked now: a kind with no
    price or no known board fails before anything runs."""
    sheet = load_sheet(prices)
    power = power_model(sheet, board_watts(data_root), kinds)
    intensity = resolve_intensity(carbon if carbon is not None else sheet.region, data_root)
    return Tariff(sheet, power, intensity)
