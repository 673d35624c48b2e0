"""Bearer tokens of the index API: created, listed, revoked and checked.

A token is 32 random bytes, URL-safe, with the prefix ``anon_`` so that it is recognisable
in a secret scanner. It is shown once, at creation; the index keeps only its SHA-256 (a
token has 256 bits of entropy, so a fast hash is enough: there is nothing to guess).
Every token has one role:

- ``operator``: status, commands and de-identified objects; never an original value;
- ``phi-reader``: what an operator may, and original values (each read audited);
- ``admin``: what an operator may, and configuration, tokens and the audit trail.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

OPERATOR = "operator"
PHI_READER = "phi-reader"
ADMIN = "admin"
ROLES = (OPERATOR, PHI_READER, ADMIN)

PREFIX = "anon_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

# What each role may do, by permission.
STATUS = "status"      # counts, jobs, lists of pseudonymous identifiers, objects
COMMANDS = "commands"  # query, retrieve, export, the export switch
PHI = "phi"            # original values
CONFIGURE = "configure"  # script, filter, quarantine release and purge, tokens, audit
PERMISSIONS: dict[str, frozenset[str]] = {
    OPERATOR: frozenset({STATUS, COMMANDS}),
    PHI_READER: frozenset({STATUS, COMMANDS, PHI}),
    ADMIN: frozenset({STATUS, COMMANDS, CONFIGURE}),
}


class TokenError(ValueError):
    """A token cannot be created or revoked as asked (the message says why)."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    name: str
    role: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name, "role": self.role, "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise TokenError("a token name is 1 to 64 letters, digits and . _ @ -, "
                         "beginning with a letter or digit")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise TokenError(f"the role is one of {', '.join(ROLES)}")
    return role


_COLUMNS = "id, name, role, created_by, created_at, revoked_at, last_used_at"


def _info(row: asyncpg.Record) -> TokenInfo:
    return TokenInfo(row["id"], row["name"], row["role"], row["created_by"],
                     row["created_at"], row["revoked_at"], row["last_used_at"])


async def create_token(
    connection: asyncpg.Connection, name: str, role: str, created_by: str
) -> tuple[str, TokenInfo]:
    """A new token (shown to its owner once) and its record; TokenError when the name is
    malformed, the role unknown, or an active token already has the name."""
    check_name(name)
    check_role(role)
    token = PREFIX + secrets.token_urlsafe(32)
    try:
        row = await connection.fetchrow(
            f"INSERT INTO api_token (name, role, token_sha256, created_by)"
            f" VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}",
            name, role, digest(token), created_by,
        )
    except asyncpg.UniqueViolationError:
        raise TokenError(f"an active token is already named {name}; revoke it first") from None
    assert row is not None
    return token, _info(row)


async def revoke_token(connection: asyncpg.Connection, name: str) -> TokenInfo:
    """Revoke the active token of this name (it stops working at once); TokenError when
    there is none."""
    row = await connection.fetchrow(
        f"UPDATE api_token SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL"
        f" RETURNING {_COLUMNS}", name)
    if row is None:
        raise TokenError(f"no active token is named {name}")
    return _info(row)


async def list_tokens(pool: asyncpg.Pool, include_revoked: bool = True) -> list[TokenInfo]:
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            f"SELECT {_COLUMNS} FROM api_token WHERE $1 OR revoked_at IS NULL"
            " ORDER BY created_at, id", include_revoked)
    return [_info(r) for r in rows]


async def authenticate(pool: asyncpg.Pool, token: str) -> TokenInfo | None:
    """The active token presented, or None (unknown, malformed or revoked)."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    async with pool.acquire() as connection:
        row = await connection.fetchrow(
            f"SELECT {_COLUMNS} FROM api_token WHERE token_sha256 = $1 AND revoked_at IS NULL",
            digest(token))
    return _info(row) if row is not None else None


async def touch(pool: asyncpg.Pool, token_ids: list[int]) -> None:
    """Note that these tokens were used now (called now and then, not on every request)."""
    if token_ids:
        async with pool.acquire() as connection:
            await connection.execute(
                "UPDATE api_token SET last_used_at = now() WHERE id = ANY($1::bigint[])",
                token_ids)
