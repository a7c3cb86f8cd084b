"""Where budget alerts go: the log, and optionally a webhook.

A webhook POST must never hold up a scheduling round, so it runs on a daemon thread; a failure
(refused, timeout, HTTP error) is logged, never raised: an unreachable chat server must not stop
the cluster from scheduling.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

from thrifty.accounting.budgets import Alert

log = logging.getLogger("thrifty.accounting")

AlertSink = Callable[[Alert], None]


def log_sink(alert: Alert) -> None:
    log.warning("budget alert: %s", alert.message())


class WebhookSink:
    """POSTs each alert as JSON to `url` in the background."""

    def __init__(self, url: str, timeout_s: float = 5.0):
        self.url = url
        self.timeout_s = timeout_s
        self._threads: list[threading.Thread] = []

    def __call__(self, alert: Alert) -> None:
        thread = threading.Thread(target=self._post, args=(alert,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _post(self, alert: Alert) -> None:
        body = json.dumps(alert.to_dict()).encode()
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as err:
            log.warning("budget alert webhook %s failed: %s", self.url, err)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for the POSTs in flight (tests and shutdown)."""
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads = [t for t in self._threads if t.is_alive()]
