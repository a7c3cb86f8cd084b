"""`/users`: admins add users, list them, rotate and revoke their tokens.

Tokens are stored only hashed: a list shows each user's `token_id` (the start of that hash),
never a token, and a revoked token fails its very next request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from thrifty.cluster.api.common import Caller, Plane, Who, errors, fail
from thrifty.cluster.schema import User
from thrifty.cluster.spec import NAME_PATTERN
from thrifty.cluster.store import token_id

router = APIRouter(tags=["users"])


class NewUser(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="Login name, also the owner of jobs.")
    admin: bool = Field(False, description="Admins see every job and manage users.")
    rotate: bool = Field(False, description="Issue a new token to an existing user (the old "
                                            "one stops working; a revoked user gets one again).")


class NewToken(BaseModel):
    name: str
    admin: bool
    token: str = Field(description="The API token, shown this once (stored only hashed).")


class UserInfo(BaseModel):
    name: str
    admin: bool
    created_at: float = Field(description="When the user was added (Unix time, seconds).")
    token_id: str | None = Field(description="The first 12 hex digits of the SHA-256 of the "
                                             "user's token; null once revoked.")
    revoked_at: float | None = Field(description="When the token was revoked (Unix time).")


class UserList(BaseModel):
    users: list[UserInfo]


def _info(user: User) -> UserInfo:
    return UserInfo(name=user.name, admin=bool(user.admin), created_at=user.created_at,
                    token_id=token_id(user), revoked_at=user.revoked_at)


def _admin(who: Caller, doing: str) -> None:
    if not who.admin:
        raise fail(403, f"only an admin may {doing}")


@router.post("/users", summary="Add a user (admins)", status_code=201,
             responses=errors(401, 403, 409, 413, 422))
def add_user(new: NewUser, who: Who, plane: Plane) -> NewToken:
    """Returns the user's API token: it is stored only hashed, so this is the one chance."""
    _admin(who, "add users")
    if plane.store.has_user(new.name) and not new.rotate:
        raise fail(409, f"user {new.name} exists; rotate its token (`thrifty users add "
                        f"{new.name} --rotate`) to issue a new one")
    token = plane.store.add_user(new.name, admin=new.admin)
    return NewToken(name=new.name, admin=new.admin, token=token)


@router.get("/users", summary="Every user and their token's id (admins)",
            responses=errors(401, 403))
def list_users(who: Who, plane: Plane) -> UserList:
    _admin(who, "list users")
    return UserList(users=[_info(user) for user in plane.store.users()])


@router.post("/users/{name}/revoke", summary="Revoke a user's token at once (admins)",
             responses=errors(401, 403, 404, 409, 422))
def revoke_user(name: Annotated[str, Path(max_length=64)], who: Who, plane: Plane) -> UserInfo:
    """The token fails from the next request on; the user's jobs stay. `POST /users` with
    `rotate` issues a new one."""
    _admin(who, "revoke tokens")
    if name == who.name:
        raise fail(409, "you cannot revoke your own token (nobody could then undo it); have "
                        "another admin do it")
    user = plane.store.revoke_user(name)
    if user is None:
        raise fail(404, f"no user {name}; `thrifty users list` shows them")
    return _info(user)
