"""``anon token create|revoke|list``: the bearer tokens of the index API.

A token is printed once, when it is created; the index keeps only its hash. Creating and
revoking are recorded in the audit trail under the operating-system user who ran the command.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from services.cli.remote import add_data_dir_argument

if TYPE_CHECKING:
    from shared.config import Settings

NAME = "token"
HELP = "create, revoke or list the bearer tokens of the index API"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a token and print it (once)")
    create.add_argument("--role", required=True, choices=("operator", "phi-reader", "admin"),
                        help="operator: status, commands, de-identified objects; phi-reader: "
                             "also original values; admin: configuration, tokens, audit")
    create.add_argument("--name", required=True,
                        help="who or what holds it, e.g. research-platform (letters, digits, ._@-)")
    revoke = actions.add_parser("revoke", help="revoke a token: it stops working at once")
    revoke.add_argument("name", metavar="NAME")
    listing = actions.add_parser("list", help="name, role, created, last used, revoked")
    listing.add_argument("--json", action="store_true", help="as JSON lines")
    listing.add_argument("--active", action="store_true", help="only tokens not revoked")
    add_data_dir_argument(parser, [create, revoke, listing])


def cli_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli"


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from shared.index import audit, tokens
    from shared.index.connect import open_index

    async def act() -> int:
        opened = await open_index(args.data_dir or settings.data_dir, settings.database_url,
                                  max_connections=1)
        try:
            if args.action == "list":
                for info in await tokens.list_tokens(opened.pool,
                                                     include_revoked=not args.active):
                    shown = info.public()
                    if args.json:
                        print(json.dumps(shown))
                    else:
                        print("\t".join([info.name, info.role, shown["created_at"],
                                         shown["last_used_at"] or "never used",
                                         f"revoked {shown['revoked_at']}" if info.revoked_at
                                         else "active"]))
                return 0
            actor = cli_actor()
            async with opened.pool.acquire() as connection, connection.transaction():
                if args.action == "create":
                    token, info = await tokens.create_token(connection, args.name, args.role,
                                                            actor)
                    await audit.record(connection, actor=actor, client="local",
                                       action="token.create", target=info.name,
                                       detail={"role": info.role})
                else:
                    info = await tokens.revoke_token(connection, args.name)
                    await audit.record(connection, actor=actor, client="local",
                                       action="token.revoke", target=info.name)
            if args.action == "create":
                print(token)
                print(f"token {info.name} ({info.role}) created; it is shown only now: keep it "
                      "in a secret store", file=sys.stderr)
            else:
                print(f"token {info.name} revoked")
            return 0
        except tokens.TokenError as exc:
            print(f"anon token: {exc}", file=sys.stderr)
            return 1
        finally:
            await opened.close()

    return asyncio.run(act())
