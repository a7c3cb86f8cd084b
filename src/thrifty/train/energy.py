"""The energy a replica's GPU drew, read from the board's own counter rather than modelled.

NVIDIA GPUs since Volta count the energy they used since the driver loaded (millijoules, through
NVML); the difference between two readings is what this replica's work drew, idle moments and
data loading included. Where there is no such counter (a CPU, an older GPU, no NVML library) the
meter reads None, and accounting models the energy from board power instead, labelled as such,
so that a report never passes a model off as a measurement.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

MJ_PER_KWH = 3.6e9


def _nvml_handle(device: torch.device) -> Any | None:
    """NVML's handle of the CUDA device this process uses, found by UUID: NVML numbers every
    GPU of the machine, CUDA only those CUDA_VISIBLE_DEVICES shows."""
    try:
        import pynvml

        pynvml.nvmlInit()
        uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
        if uuid is not None:
            handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
        elif not os.environ.get("CUDA_VISIBLE_DEVICES"):  # both count every GPU alike
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        else:
            raise RuntimeError("cannot tell which GPU NVML calls this device")
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # supported on this board?
        return handle
    except Exception as err:  # no library, no driver, or a board without the counter
        log.info("no energy counter for %s (%s): energy will be modelled", device, err)
        return None


class EnergyMeter:
    """kWh this process's GPU drew since the meter started; None where nothing counts it."""

    def __init__(self, device: torch.device) -> None:
        self._handle = _nvml_handle(device) if device.type == "cuda" else None
        self._start_mj = self._read_mj()

    @property
    def available(self) -> bool:
        return self._start_mj is not None

    def _read_mj(self) -> float | None:
        if self._handle is None:
            return None
        try:
            import pynvml

            return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception as err:  # the driver went away mid-run: stop claiming a measurement
            log.warning("energy counter failed (%s): energy will be modelled", err)
            self._handle = None
            return None

    def kwh(self) -> float | None:
        now = self._read_mj()
        if now is None or self._start_mj is None:
            return None
        return max(now - self._start_mj, 0.0) / MJ_PER_KWH


def replicas_kwh(meter: EnergyMeter, device: torch.device, distributed: bool) -> float | None:
    """kWh all replicas' GPUs drew this attempt: the sum of their meters, None unless every one
    measured (collective on a GPU: every replica calls it at the same step)."""
    if device.type != "cuda":  # the same answer on every replica: no collective
        return None
    mine = meter.kwh()
    value = torch.tensor([math.nan if mine is None else mine], dtype=torch.float64, device=device)
    if distributed:
        dist.all_reduce(value)
    total = float(value.item())
    return None if math.isnan(total) else total
