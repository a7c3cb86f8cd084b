"""Publishing the job's `JobReport` to the scheduler without ever slowing training down.

Training hands its latest report to `Reporter.publish`, which only stores it; a daemon thread sends
the newest one every `interval_s` seconds, to an HTTP endpoint (POSTed as JSON) or a file (replaced
atomically, so a reader never sees half of it). A receiver that is down costs a logged warning,
never a stalled step: the thread uses short timeouts and simply tries again next time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thrifty.contract import Env, JobReport
from thrifty.errors import ThriftyError

log = logging.getLogger(__name__)


def metric_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A script's named results as floats (what `JobReport.metrics` holds), or a ThriftyError
    naming the first that is not a finite number."""
    values = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise ThriftyError(f"a metric's name must be a non-empty string, got {name!r}")
        if isinstance(value, bool | str | bytes):
            raise ThriftyError(f"metric {name!r} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ThriftyError(f"metric {name!r} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ThriftyError(f"metric {name!r} must be finite, got {number}")
        values[name] = number
    return values


def _write_file(path: Path, body: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(body)
    os.replace(tmp, path)


def _post(url: str, body: bytes, timeout: float) -> None:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


class Reporter:
    """Sends the newest report to `target` (http(s) URL or file path) every `interval_s` seconds."""

    def __init__(self, target: str, interval_s: float = 5.0, timeout_s: float = 2.0) -> None:
        if interval_s <= 0:
            raise ThriftyError(f"report interval must be positive, got {interval_s}")
        self.target = target
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.is_http = target.startswith(("http://", "https://"))
        if not self.is_http:
            folder = Path(target).parent
            if not folder.is_dir():
                raise ThriftyError(
                    f"report file {target}: folder {folder} does not exist; create it or set "
                    f"{Env.REPORT} to a path in an existing folder (or an http:// URL)"
                )
        self.sent = 0
        self.failures = 0
        self._latest: bytes | None = None
        self._sent_version = 0
        self._version = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thrifty-report", daemon=True)
        self._thread.start()

    def publish(self, report: JobReport) -> None:
        """Remember `report` as the newest; returns at once."""
        body = json.dumps(report.to_dict()).encode()
        with self._lock:
            self._latest = body
            self._version += 1

    def _send_latest(self) -> None:
        with self._lock:
            body, version = self._latest, self._version
        if body is None or version == self._sent_version:
            return
        try:
            if self.is_http:
                _post(self.target, body, self.timeout_s)
            else:
                _write_file(Path(self.target), body)
        except (OSError, urllib.error.URLError, ValueError) as err:
            self.failures += 1
            if self.failures in (1, 10) or self.failures % 100 == 0:
                log.warning("could not report to %s (%s); training goes on", self.target, err)
            return
        self._sent_version = version
        self.sent += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._send_latest()
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def close(self, flush: bool = True) -> None:
        """Stop the thread, sending the newest report once more when `flush` (bounded wait)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.timeout_s + 1.0)
        if flush:
            self._send_latest()
