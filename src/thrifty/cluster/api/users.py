"""`/users`: admins add users and rotate their tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from thrifty.cluster.api.common import Plane, Who, fail
from thrifty.cluster.spec import NAME_PATTERN

router = APIRouter(tags=["users"])


class NewUser(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="Login name, also the owner of jobs.")
    admin: bool = Field(False, description="Admins see every job and add users.")
    rotate: bool = Field(False, description="Issue a new token to an existing user (the old "
                                            "one stops working).")


@router.post("/users", summary="Add a user (admins)", status_code=201)
def add_user(new: NewUser, who: Who, plane: Plane) -> dict[str, Any]:
    """Returns the user's API token: it is stored only hashed, so this is the one chance."""
    if not who.admin:
        raise fail(403, "only an admin may add users")
    if plane.store.has_user(new.name) and not new.rotate:
        raise fail(409, f"user {new.name} exists; rotate its token (`thrifty users add "
                        f"{new.name} --rotate`) to issue a new one")
    token = plane.store.add_user(new.name, admin=new.admin)
    return {"name": new.name, "admin": new.admin, "token": token}
