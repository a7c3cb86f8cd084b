"""`thrifty users add|list|revoke`: API users and their tokens, over HTTP (admins only)."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from thrifty.cli.cluster import api_client
from thrifty.cli.options import ServerOpt, TokenOpt
from thrifty.cli.output import results_console
from thrifty.contract import Env


def users_add_command(
    name: Annotated[str, typer.Argument(help="The user's name (owner of their jobs).")],
    admin: Annotated[bool, typer.Option("--admin", help="May see all jobs and add users.")]
    = False,
    rotate: Annotated[bool, typer.Option("--rotate", help="Issue a new token to an existing "
                                         "user; the old one stops working.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Add a user (admins only) and print their API token, which is shown this once."""
    with api_client(server, token) as client:
        user = client.add_user(name, admin=admin, rotate=rotate)
    sys.stderr.write(f"user {user['name']}{' (admin)' if user['admin'] else ''}: give them this "
                     f"token ({Env.TOKEN} or --token):\n")
    print(user["token"])


def users_list_command(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Every user (admins only): admin or not, when added, and their token's id (the first
    digits of its SHA-256; tokens themselves are never stored)."""
    with api_client(server, token) as client:
        users = client.users()
    if as_json:
        print(json.dumps(users, indent=2))
        return
    table = Table(header_style="bold")
    for header in ("name", "admin", "created", "token id"):
        table.add_column(header)
    for user in users:
        table.add_row(escape(user["name"]), "yes" if user["admin"] else "",
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(user["created_at"])),
                      user["token_id"] or "[red]revoked[/]")
    results_console().print(table)


def users_revoke_command(
    name: Annotated[str, typer.Argument(help="The user whose token stops working.")],
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Revoke a user's token at once (admins only); their jobs stay. `users add NAME --rotate`
    gives them a new one."""
    with api_client(server, token) as client:
        client.revoke_user(name)
    sys.stderr.write(f"revoked {name}'s token; `thrifty users add {name} --rotate` issues a "
                     "new one\n")


def register(app: typer.Typer) -> None:
    users = typer.Typer(help="API users and their tokens (admins).", no_args_is_help=True)
    users.command("add")(users_add_command)
    users.command("list")(users_list_command)
    users.command("revoke")(users_revoke_command)
    app.add_typer(users, name="users")
