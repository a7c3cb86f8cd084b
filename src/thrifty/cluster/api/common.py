"""What every router of the API shares: the caller behind a token, the plane, errors and the
models that document them, job views."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from thrifty.cluster.plane import ControlPlane
from thrifty.cluster.schema import JobRow
from thrifty.cluster.states import ACTIVE_STATES, TERMINAL_STATES
from thrifty.cluster.summary import job_summary

STATES = (*ACTIVE_STATES, *TERMINAL_STATES)
TOKEN_HELP = ("send `Authorization: Bearer <token>`; `thrifty server` writes the admin's token "
              "to THRIFTY_HOME/token, and `thrifty users add NAME` makes one per user")


@dataclass(frozen=True)
class Caller:
    """The user a request's token belongs to."""

    name: str
    admin: bool


def fail(status: int, message: str, **headers: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers or None)


class ErrorBody(BaseModel):
    """Every error but a 422: one sentence that says what went wrong and what to do."""

    detail: str = Field(description="What went wrong and how to fix it.")


class Problem(BaseModel):
    field: str = Field(description="Where: a spec field's dotted path (`resources.min_replicas`"
                                   "), `(spec)` for the whole body, or a parameter "
                                   "(`query.offset`, `header.idempotency-key`).")
    message: str = Field(description="What is wrong with it and how to fix it.")


class Problems(BaseModel):
    """A 422: every wrong field of a request or job spec at once, so it is fixed in one go."""

    detail: str = Field(description="How many problems, and that each is to be fixed.")
    problems: list[Problem]


class Unprocessable(Exception):
    """A request that parsed but is wrong; answered as `Problems` with status 422."""

    def __init__(self, detail: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(detail)
        self.detail, self.problems = detail, problems


def problems_body(detail: str, problems: list[tuple[str, str]]) -> dict[str, Any]:
    return {"detail": detail,
            "problems": [{"field": field, "message": message} for field, message in problems]}


_MEANINGS = {
    400: "The request cannot be carried out as it stands; `detail` says why.",
    401: "No API token, or one that is unknown or revoked.",
    403: "Only an admin (or another owner) may do this.",
    404: "No such job, or one that is another user's: the two answer alike, so that an id "
         "tells nothing about jobs you cannot see.",
    409: "It conflicts with what is stored; `detail` says what to send instead.",
    413: "The body is over the size limit.",
    415: "The body's Content-Type is not one this route reads.",
    422: "Every wrong parameter or spec field, each with its path.",
    503: "The job store or the executor does not answer.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the errors a route gives: their meaning and body model."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {"model": Problems if status == 422 else ErrorBody,
                       "description": _MEANINGS[status]}
        if status == 401:
            out[status]["headers"] = {"WWW-Authenticate": {
                "description": "`Bearer`", "schema": {"type": "string"}}}
    return out


def current_plane(request: Request) -> ControlPlane:
    return request.app.state.plane


Plane = Annotated[ControlPlane, Depends(current_plane)]

_bearer = HTTPBearer(auto_error=False, description="An API token (`thrifty users add`).")


def current_caller(
    plane: Plane,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The user behind the request's token, or a 401 that says where tokens come from."""
    if credentials is None:
        raise fail(401, f"missing API token: {TOKEN_HELP}", **{"WWW-Authenticate": "Bearer"})
    user = plane.store.user_for_token(credentials.credentials)
    if user is None:
        raise fail(401, f"invalid API token (unknown, rotated or revoked): {TOKEN_HELP}",
                   **{"WWW-Authenticate": "Bearer"})
    return Caller(user.name, bool(user.admin))


Who = Annotated[Caller, Depends(current_caller)]


def own_job(plane: ControlPlane, who: Caller, job_id: str) -> JobRow:
    """The job, if the caller may see it (an admin sees all). Another user's job is a 404 with
    the same body as a missing one, so that nobody learns which ids exist."""
    row = plane.store.get(job_id)
    if row is None or (not who.admin and row.owner != who.name):
        raise fail(404, f"no job {job_id} of yours; `thrifty jobs --all-states` lists them")
    return row


def show(row: JobRow, now: float | None = None) -> dict[str, Any]:
    return {**job_summary(row, time.time() if now is None else now),
            "cancel_requested": bool(row.cancel_requested)}
