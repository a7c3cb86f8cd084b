"""What every router of the API shares: the caller behind a token, the plane, errors, job views."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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
        raise fail(401, f"invalid API token: {TOKEN_HELP}", **{"WWW-Authenticate": "Bearer"})
    return Caller(user.name, bool(user.admin))


Who = Annotated[Caller, Depends(current_caller)]


def own_job(plane: ControlPlane, who: Caller, job_id: str) -> JobRow:
    """The job, if the caller may see it: another user's is a 403, so that a typo in an id (a
    404) is told apart from a missing permission."""
    row = plane.store.get(job_id)
    if row is None:
        raise fail(404, f"no job {job_id}; `thrifty jobs --all-states` lists yours")
    if not who.admin and row.owner != who.name:
        raise fail(403, f"job {job_id} belongs to another user; you can only see and change "
                        "your own jobs")
    return row


def show(row: JobRow, now: float | None = None) -> dict[str, Any]:
    return {**job_summary(row, time.time() if now is None else now),
            "cancel_requested": bool(row.cancel_requested)}
