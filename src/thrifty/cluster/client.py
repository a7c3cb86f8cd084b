"""A small client of the control plane's REST API: one method per endpoint, errors as one line.

The CLI talks to the server only through this, so what a script can do over HTTP and what the
CLI does are the same thing. Every failure is a `ThriftyError` whose message says what to do.
The caller names the server and token (from its `Settings`); this module reads no environment.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from thrifty.contract import Env
from thrifty.errors import ThriftyError
from thrifty.settings import DEFAULT_SERVER, Settings

__all__ = ["DEFAULT_SERVER", "ApiError", "Client", "ServerUnreachable", "find_token"]

SUBMIT_TRIES = 4  # a submission survives a dropped connection or a server restart of ~2 s


def find_token(settings: Settings, given: str | None = None) -> str | None:
    """`given`, else the settings' token, else the token file; None when there is none."""
    if given and given.strip():
        return given.strip()
    if settings.token:
        return settings.token
    try:
        return settings.token_file.read_text().strip() or None
    except OSError:
        return None


class ServerUnreachable(ThriftyError):
    """Nothing listens at the server's address."""

    def __init__(self, server: str) -> None:
        self.server = server
        super().__init__(f"no thrifty server at {server}: start one with `thrifty server` "
                         f"(or point --server / {Env.SERVER} at yours)")


class ApiError(ThriftyError):
    """The server answered with an error; `problems` lists a rejected spec's (field, message)."""

    def __init__(self, status: int, detail: str,
                 problems: Sequence[tuple[str, str]] = ()) -> None:
        self.status, self.detail, self.problems = status, detail, list(problems)
        super().__init__(detail)


class Client:
    """Requests to one server with one token (None: the server will answer 401)."""

    def __init__(self, server: str = DEFAULT_SERVER, token: str | None = None,
                 timeout_s: float = 30.0, token_file: Path | None = None) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.token_file = token_file  # named in the error when the server wants a token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout_s,
                                  trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- plumbing ------------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ServerUnreachable(self.server) from None
        except httpx.TransportError as err:
            raise ThriftyError(f"the thrifty server at {self.server} did not answer "
                               f"{method} {path}: {err or type(err).__name__}") from err
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _error(self, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text.strip() or response.reason_phrase}
        detail = body.get("detail") if isinstance(body, dict) else None
        problems = [(p.get("field", "?"), p.get("message", "")) for p in body.get("problems", [])
                    ] if isinstance(body, dict) else []
        if isinstance(detail, list):  # FastAPI's own validation errors
            problems = [(".".join(str(x) for x in item.get("loc", [])), item.get("msg", ""))
                        for item in detail if isinstance(item, dict)]
            detail = "; ".join(f"{field}: {message}" for field, message in problems)
        detail = str(detail or response.reason_phrase)
        if response.status_code == 401 and not self.token:
            where = f" or put it in {self.token_file}" if self.token_file else ""
            detail = (f"the server wants an API token: pass --token or set {Env.TOKEN}{where} "
                      f"({detail})")
        return ApiError(response.status_code, f"{detail} (HTTP {response.status_code})",
                        problems)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    # ---- endpoints -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def submit(self, spec: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        """Submit once, even when retried: every try carries the same Idempotency-Key."""
        key = key or uuid.uuid4().hex
        for attempt in range(SUBMIT_TRIES):
            try:
                return self._json("POST", "/jobs", json=spec, headers={"Idempotency-Key": key})
            except ServerUnreachable:
                if attempt == 0 or attempt == SUBMIT_TRIES - 1:
                    raise  # nothing listens: say so at once rather than after the retries
            except ApiError:
                raise
            except ThriftyError:
                if attempt == SUBMIT_TRIES - 1:
                    raise
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def jobs(self, states: Sequence[str] = (), limit: int = 100, offset: int = 0,
             owner: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if states:
            params["state"] = ",".join(states)
        if owner:
            params["owner"] = owner
        return self._json("GET", "/jobs", params=params)

    def iter_jobs(self, states: Sequence[str] = (), limit: int | None = None,
                  page: int = 1000) -> Iterator[dict[str, Any]]:
        """Jobs newest first across pages, at most `limit` of them."""
        offset = 0
        while limit is None or offset < limit:
            size = page if limit is None else min(page, limit - offset)
            batch = self.jobs(states, size, offset)["jobs"]
            yield from batch
            if len(batch) < size:
                return
            offset += len(batch)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{job_id}/cancel")

    def logs(self, job_id: str, tail: int | None = None, attempt: int | None = None,
             rank: int | None = None, offset: int | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("tail", tail), ("attempt", attempt), ("rank", rank),
                                    ("offset", offset)) if v is not None}
        return self._json("GET", f"/jobs/{job_id}/logs", params=params)

    def cluster(self) -> dict[str, Any]:
        return self._json("GET", "/cluster")

    def usage(self) -> dict[str, Any]:
        return self._json("GET", "/usage")

    def metrics(self) -> str:
        return self._send("GET", "/metrics").text

    def add_user(self, name: str, admin: bool = False, rotate: bool = False) -> dict[str, Any]:
        return self._json("POST", "/users", json={"name": name, "admin": admin, "rotate": rotate})

    def users(self) -> list[dict[str, Any]]:
        """Every user: name, admin, created_at, token_id (never the token), revoked_at."""
        return self._json("GET", "/users")["users"]

    def revoke_user(self, name: str) -> dict[str, Any]:
        return self._json("POST", f"/users/{quote(name, safe='')}/revoke")
