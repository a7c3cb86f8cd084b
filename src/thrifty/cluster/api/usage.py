"""`/usage`: what the jobs used and cost, as the ledger `thrifty report` groups."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from thrifty.cluster.api.cluster import executor_nodes
from thrifty.cluster.api.common import Plane, Who, errors
from thrifty.cluster.usage import live_ledger

router = APIRouter(tags=["usage"])


@router.get("/usage", summary="GPU-hours, USD, kWh and kg CO2e of every job, as a ledger",
            responses=errors(400, 401, 503))
def usage(who: Who, plane: Plane) -> dict[str, Any]:
    """An admin's covers everyone's jobs, anyone else's their own; `thrifty report` groups it
    by job, user or team."""
    book = live_ledger(plane.store, plane.tariff, time.time(), executor_nodes(plane),
                       owner=None if who.admin else who.name)
    return book.to_dict()
