"""The REST API of the control plane: jobs, their logs, the cluster, usage and users over HTTP.

Everyone but `/healthz` sends a user's API token (`Authorization: Bearer thr_...`). A user sees
and changes only their own jobs; an admin sees everything and manages users. One router per
resource (`jobs`, `cluster`, `usage`, `users`); every query is a `Store` method. Every answer a
route can give is in its OpenAPI document, errors included, and `/docs` renders it offline.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from thrifty import __version__
from thrifty.cluster.api import cluster, jobs, usage, users
from thrifty.cluster.api.cluster import metrics_text
from thrifty.cluster.api.common import STATES, Caller, Unprocessable, problems_body
from thrifty.cluster.api.docs import add_docs
from thrifty.cluster.api.jobs import parse_body, parse_states
from thrifty.cluster.api.limits import BodyLimits
from thrifty.cluster.api.logfiles import read_from, read_tail
from thrifty.cluster.api.server import ApiServer, bind
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.spec import JobSpec, SpecError
from thrifty.cluster.store import KeyReused
from thrifty.errors import ThriftyError


def _problems(_request: Request, err: SpecError) -> JSONResponse:
    return JSONResponse(status_code=422, content=problems_body(
        f"invalid job spec: {len(err.problems)} problem(s); fix every field listed in "
        "`problems` and submit again", err.problems))


def _unprocessable(_request: Request, err: Unprocessable) -> JSONResponse:
    return JSONResponse(status_code=422, content=problems_body(err.detail, err.problems))


def _invalid_request(_request: Request, err: RequestValidationError) -> JSONResponse:
    """FastAPI's own checks of parameters, in the same shape as a spec's problems."""
    found = [(".".join(str(part) for part in item.get("loc", ())) or "(request)",
              str(item.get("msg", "invalid"))) for item in err.errors()]
    return JSONResponse(status_code=422, content=problems_body(
        f"invalid request: {len(found)} problem(s); fix every parameter listed in `problems`",
        found))


def _key_reused(_request: Request, err: KeyReused) -> JSONResponse:
    return JSONResponse(status_code=409, content={"detail": str(err)})


def _thrifty_error(_request: Request, err: ThriftyError) -> JSONResponse:
    return JSONResponse(status_code=400, content={"detail": str(err)})


def _with_job_spec(app: FastAPI) -> None:
    """The OpenAPI document with JobSpec's schema among its components: `POST /jobs` reads its
    body itself (JSON or YAML), so FastAPI would not put it there."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            spec = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(spec.pop("$defs", {}))
            components["JobSpec"] = spec
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(plane: ControlPlane) -> FastAPI:
    """The API over one control plane (whose loop the caller starts and stops)."""
    app = FastAPI(
        title="thrifty",
        version=__version__,
        description="Submit, watch and cancel training jobs; see the cluster the scheduler shares "
                    "among them. Authenticate with a token: `Authorization: Bearer <token>`.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.plane = plane
    app.add_middleware(BodyLimits)
    app.add_exception_handler(SpecError, _problems)  # type: ignore[arg-type]
    app.add_exception_handler(Unprocessable, _unprocessable)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(KeyReused, _key_reused)  # type: ignore[arg-type]
    app.add_exception_handler(ThriftyError, _thrifty_error)  # type: ignore[arg-type]
    for module in (jobs, cluster, usage, users):
        app.include_router(module.router)
    add_docs(app)
    _with_job_spec(app)
    return app


__all__ = ["STATES", "ApiServer", "Caller", "bind", "create_app", "metrics_text", "parse_body",
           "parse_states", "read_from", "read_tail"]
