"""Price sheets, board power and grid intensity: read, validated, and turned into figures."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from thrifty.accounting.carbon import (
    IntensitySeries,
    StaticIntensity,
    best_start,
    load_intensity_series,
)
from thrifty.accounting.energy import PowerModel, job_energy, load_board_power
from thrifty.accounting.prices import load_catalogue, load_price_sheet
from thrifty.errors import InputError, ThriftyError

SHEET = """
name = "lab"
pue = 1.2
region = "gb"
[energy]
busy_utilisation = 0.9
[onprem.aws]
usd_per_gpu_hour = 1.0
usd_per_cpu_hour = 0.05
[[cloud]]
provider = "aws"
instance_type = "g4dn.xlarge"
accelerator = "T4"
accelerator_count = 1
on_demand_usd_per_hour = 0.526
spot_usd_per_hour = 0.24
"""


def sheet(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return path


def test_a_price_sheet_is_read_with_its_rates_offers_and_energy_settings(tmp_path: Path) -> None:
    s = load_price_sheet(sheet(tmp_path, SHEET))
    assert s.usd_per_gpu_hour("aws") == 1.0
    assert s.pue == 1.2 and s.busy_utilisation == 0.9 and s.region == "gb"
    assert s.cloud[0].usd_per_hour(spot=True) == 0.24
    assert s.accelerator("aws") == "T4"
    # a node's own price wins over the sheet's rate for its kind
    assert s.node_usd_per_gpu_hour("aws", 4, 3.912) == pytest.approx(0.978)
    with pytest.raises(ThriftyError, match="no price for GPU kind 'rtx'"):
        s.usd_per_gpu_hour("rtx")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (("usd_per_gpu_hour = 1.0", ""), "onprem.aws.usd_per_gpu_hour"),
        (("usd_per_gpu_hour = 1.0", "usd_per_gpu_hour = -1.0"), "onprem.aws.usd_per_gpu_hour"),
        (("on_demand_usd_per_hour = 0.526", ""), "'on_demand_usd_per_hour' missing"),
        (("spot_usd_per_hour = 0.24", "spot_usd_per_hour = -3"), "cloud[0].spot_usd_per_hour"),
        (("pue = 1.2", "pue = 0.5"), "pue"),
        (("[energy]", "[energy]\nbusy_utilisation2 = 1"), "energy"),
    ],
)
def test_bad_price_sheets_name_the_entry(tmp_path: Path, edit: tuple[str, str],
                                         fragment: str) -> None:
    text = SHEET.replace(*edit)
    with pytest.raises(InputError) as err:
        load_price_sheet(sheet(tmp_path, text))
    assert fragment in str(err.value) and "prices.toml" in str(err.value)


def test_the_shipped_catalogue_loads_and_a_bad_row_is_named(data_root: Path,
                                                            tmp_path: Path) -> None:
    offers = load_catalogue(data_root / "prices" / "cloud-gpu-prices.csv")
    by_type = {o.instance_type: o for o in offers}
    assert by_type["g4dn.12xlarge"].accelerator_count == 4
    assert by_type["g4dn.12xlarge"].spot_usd_per_hour is None  # blank spot: none listed
    assert by_type["g4dn.xlarge"].spot_usd_per_hour == pytest.approx((0.239 + 0.248) / 2)
    assert by_type["m8i.large"].accelerator == ""
    text = (data_root / "prices" / "cloud-gpu-prices.csv").read_text().replace("0.526", "")
    bad = tmp_path / "cat.csv"
    bad.write_text(text)
    missing = r"cat.csv:2: field .g4dn.xlarge.: .on_demand_usd_per_hour. missing"
    with pytest.raises(InputError, match=missing):
        load_catalogue(bad)


def test_energy_is_board_power_times_utilisation_times_pue_unless_measured(
    data_root: Path,
) -> None:
    watts = load_board_power(data_root / "prices" / "gpu-power.csv")
    power = PowerModel(watts, {"aws": "T4"}, pue=1.5, busy_utilisation=0.8, idle_utilisation=0.1)
    # 10 T4-hours busy and 2 idle: 70 W × (0.8 × 10 + 0.1 × 2) h × 1.5
    assert power.kwh("aws", 10 * 3600, 2 * 3600) == pytest.approx(0.070 * 8.2 * 1.5)
    with pytest.raises(ThriftyError, match="unknown GPU kind 'tpu'"):
        power.kwh("tpu", 3600)
    assert job_energy(3.0).source == "modelled"
    measured = job_energy(3.0, measured_kwh=2.5)
    assert (measured.kwh, measured.source) == (2.5, "measured")


def test_series_means_integrate_the_step_function_and_wrap(data_root: Path) -> None:
    series = load_intensity_series(data_root / "carbon" / "gb_2020-06.csv")
    assert series.origin == datetime(2020, 6, 1)
    step = 1800.0
    # one reading exactly, then the mean of two readings over their two steps
    assert series.mean_g_per_kwh(0, step) == pytest.approx(series.g_per_kwh[0])
    assert series.mean_g_per_kwh(0, 2 * step) == pytest.approx(series.g_per_kwh[:2].mean())
    brute = np.mean([series.at(t) for t in np.arange(3600, 3600 + 86400, 60)])
    assert series.mean_g_per_kwh(3600, 3600 + 86400) == pytest.approx(brute, rel=1e-9)
    assert series.at(series.period_s + 10) == series.at(10)  # a month repeats


def test_best_start_picks_the_greenest_window_that_meets_the_deadline() -> None:
    # intensity 300 for the first 3 h, 100 for 3 h, then 300 again (hourly readings, 1 day)
    values = np.array([300.0] * 3 + [100.0] * 3 + [300.0] * 18)
    series = IntensitySeries("toy", datetime(2020, 6, 1), np.arange(24) * 3600.0, values)
    choice = best_start(series, ready_s=0, duration_s=3 * 3600, deadline_s=8 * 3600,
                        step_s=3600)
    assert choice.start_s == 3 * 3600 and choice.chosen_g_per_kwh == pytest.approx(100)
    assert choice.saving_fraction == pytest.approx(2 / 3)
    tight = best_start(series, ready_s=0, duration_s=3 * 3600, deadline_s=4 * 3600,
                       step_s=3600)
    assert tight.start_s <= 1 * 3600  # must finish by 4 h
    static = best_start(StaticIntensity(200), 0, 3600, 10 * 3600)
    assert static.start_s == 0 and static.saving_fraction == 0
