"""Prices, energy, carbon, ledgers, budgets and the instance advisor: pure accounting.

Nothing here reads a file except the loaders someone calls with a path, and nothing does I/O on
its own except the webhook alert sink, which posts in the background.
"""

from thrifty.accounting.budgets import Alert, Budget, BudgetBook, SpendTracker, load_budgets
from thrifty.accounting.carbon import (
    CarbonIntensity,
    IntensitySeries,
    StartChoice,
    StaticIntensity,
    best_start,
    kg_co2e,
    load_intensity_series,
)
from thrifty.accounting.energy import EnergyReading, PowerModel, job_energy, load_board_power
from thrifty.accounting.ledger import (
    JobFacts,
    Ledger,
    LedgerEntry,
    UsageSegment,
    build_ledger,
    report,
    split_owner,
)
from thrifty.accounting.prices import (
    KIND_ACCELERATOR,
    CloudOffer,
    OnPremRate,
    PriceSheet,
    default_price_sheet,
    load_catalogue,
    load_price_sheet,
)
from thrifty.accounting.tariff import Tariff, power_model

__all__ = [
    "KIND_ACCELERATOR",
    "Alert",
    "Budget",
    "BudgetBook",
    "CarbonIntensity",
    "CloudOffer",
    "EnergyReading",
    "IntensitySeries",
    "JobFacts",
    "Ledger",
    "LedgerEntry",
    "OnPremRate",
    "PowerModel",
    "PriceSheet",
    "SpendTracker",
    "StartChoice",
    "StaticIntensity",
    "Tariff",
    "UsageSegment",
    "best_start",
    "build_ledger",
    "default_price_sheet",
    "job_energy",
    "kg_co2e",
    "load_board_power",
    "load_budgets",
    "load_catalogue",
    "load_intensity_series",
    "load_price_sheet",
    "power_model",
    "report",
    "split_owner",
]
