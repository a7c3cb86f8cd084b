"""Every request body bounded before a route or FastAPI's own parser reads it.

A body over MAX_SPEC_BYTES is a 413 (told from Content-Length when it is sent, else while the
body streams in), and a JSON body nested deeper than MAX_DEPTH is a 422: Python's JSON decoder
recurses once per level, so without this a few kilobytes of brackets are a RecursionError and a
500 on any route that takes JSON. YAML bodies are measured where they are read (`bodies`).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thrifty.cluster.api.common import problems_body
from thrifty.cluster.bodies import MAX_DEPTH, MAX_SPEC_BYTES, json_depth, too_deep


def _reads_as_json(content_type: str) -> bool:
    """Whether FastAPI would parse this body as JSON (no Content-Type counts)."""
    kind = content_type.split(";")[0].strip().lower()
    return kind == "" or (kind.startswith("application/") and
                          (kind.endswith("/json") or kind.endswith("+json")))


async def _json_problem(body: bytes) -> str | None:
    """Why a JSON body is refused before it is parsed, if it is: not UTF-8 (which JSON must
    be), or nested too deeply."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not UTF-8 text ({err.reason} at byte {err.start}); JSON is sent as UTF-8"
    # A long body takes a tenth of a second to measure: off the event loop, then.
    depth = json_depth(text) if len(body) < 65536 else await run_in_threadpool(json_depth, text)
    return too_deep(depth) if depth > MAX_DEPTH else None


class BodyLimits:
    """ASGI middleware: reads the body once (at most `max_bytes`), checks it, replays it."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_SPEC_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and (len(declared) > 18 or int(declared) > self.max_bytes):
            await self._too_big(declared, scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_big(f"over {self.max_bytes}", scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and _reads_as_json(headers.get("content-type", "")):
            problem = await _json_problem(body)
            if problem:
                response = JSONResponse(status_code=422, content=problems_body(
                    f"the body cannot be read as JSON: {problem}", [("(body)", problem)]))
                await response(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_big(self, size: str, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(status_code=413, content={
            "detail": f"a body of {size} bytes is over the {self.max_bytes}-byte limit; a job "
                      "spec is a few hundred bytes"})
        await response(scope, receive, send)
