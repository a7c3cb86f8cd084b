"""Policies by name, imported only when asked for (the GA and LP solvers are heavy imports)."""

from __future__ import annotations

import importlib

from thrifty.errors import ThriftyError
from thrifty.policy.base import Policy

POLICIES: dict[str, str] = {
    "fifo": "thrifty.policy.fifo:FifoPolicy",
    "tiresias": "thrifty.policy.tiresias:TiresiasPolicy",
    "optimus": "thrifty.policy.optimus:OptimusPolicy",
    "gavel": "thrifty.policy.gavel:GavelPolicy",
    "gavel-ftf": "thrifty.policy.gavel:GavelFtfPolicy",
    "pollux": "thrifty.policy.pollux:PolluxPolicy",
    "sia": "thrifty.policy.sia:SiaPolicy",
    "thrifty": "thrifty.policy.thrifty:ThriftyPolicy",
}


def make_policy(name: str, seed: int = 0) -> Policy:
    """A fresh policy object (policies remember state between rounds: never share one)."""
    if name not in POLICIES:
        raise ThriftyError(f"unknown policy '{name}' (known: {', '.join(POLICIES)})")
    module, cls = POLICIES[name].split(":")
    return getattr(importlib.import_module(module), cls)(seed=seed)
