"""A tariff: the price sheet, power model and grid intensity together, as a meter needs them."""

from __future__ import annotations

from dataclasses import dataclass

from thrifty.accounting.carbon import CarbonIntensity
from thrifty.accounting.energy import PowerModel
from thrifty.accounting.prices import PriceSheet


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
