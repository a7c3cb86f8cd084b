"""The REST API of the control plane: jobs, their logs, the cluster, usage and users over HTTP.

Everyone but `/healthz` sends a user's API token (`Authorization: Bearer thr_...`). A user sees
and changes only their own jobs; an admin sees everything and adds users. One router per
resource (`jobs`, `cluster`, `usage`, `users`); every query is a `Store` method.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from thrifty import __version__
from thrifty.cluster.api import cluster, jobs, usage, users
from thrifty.cluster.api.cluster import metrics_text
from thrifty.cluster.api.common import STATES, Caller
from thrifty.cluster.api.jobs import parse_body, parse_states
from thrifty.cluster.api.logfiles import read_from, read_tail
from thrifty.cluster.api.server import ApiServer, bind
from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.spec import SpecError
from thrifty.errors import ThriftyError


def _problems(_request: Request, err: SpecError) -> JSONResponse:
    return JSONResponse(status_code=422, content={
        "detail": f"invalid job spec: {len(err.problems)} problem(s); fix every field listed in "
                  "`problems` and submit again",
        "problems": [{"field": field, "message": message} for field, message in err.problems],
    })


def _thrifty_error(_request: Request, err: ThriftyError) -> JSONResponse:
    return JSONResponse(status_code=400, content={"detail": str(err)})


def create_app(plane: ControlPlane) -> FastAPI:
    """The API over one control plane (whose loop the caller starts and stops)."""
    app = FastAPI(
        title="thrifty",
        version=__version__,
        description="Submit, watch and cancel training jobs; see the cluster the scheduler shares "
                    "among them. Authenticate with a token: `Authorization: Bearer <token>`.",
    )
    app.state.plane = plane
    app.add_exception_handler(SpecError, _problems)  # type: ignore[arg-type]
    app.add_exception_handler(ThriftyError, _thrifty_error)  # type: ignore[arg-type]
    for module in (jobs, cluster, usage, users):
        app.include_router(module.router)
    return app


__all__ = ["STATES", "ApiServer", "Caller", "bind", "create_app", "metrics_text", "parse_body",
           "parse_states", "read_from", "read_tail"]
