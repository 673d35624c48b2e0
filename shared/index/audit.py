"""The audit trail: who read or changed PHI or configuration, when, from where, what was
asked and with what outcome.

A record is written on the same connection, inside the same transaction, as the read or
change it records, so there is no read without its record and no record of a change that
did not happen. Records hold pseudonymous identifiers, parameter names and counts, never an
original value: the trail can be shown to an administrator who may not read PHI. The table
is append-only (migration 0008 and ``infra/db/roles.sql``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

OK = "ok"
NOT_FOUND = "not-found"
DENIED = "denied"
RATE_LIMITED = "rate-limited"
INVALID = "invalid"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    at: datetime
    actor: str
    role: str
    client: str
    action: str
    target: str
    outcome: str
    status: int | None
    detail: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat(), "actor": self.actor,
                "role": self.role, "client": self.client, "action": self.action,
                "target": self.target, "outcome": self.outcome, "status": self.status,
                "detail": self.detail}


INSERT = (
    "INSERT INTO audit_event (actor, role, client, action, target, outcome, status, detail)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
)


def values(actor: str, role: str, client: str, action: str, target: str, outcome: str,
           status: int | None, detail: dict[str, Any] | None) -> tuple[Any, ...]:
    """The parameters of :data:`INSERT`, for callers that fold it into a larger statement."""
    return (actor, role, client, action, target[:200], outcome, status,
            json.dumps(detail or {}, sort_keys=True))


def fields(actor: str, role: str, client: str, action: str, target: str) -> tuple[str, ...]:
    """The parameters of :func:`read_recorded`'s record: who read what, from where."""
    return (actor, role, client, action, target[:200])


def read_recorded(query: str, first: int, order_by: str = "") -> str:
    """One statement that answers the rows of ``query`` (a SELECT with parameters $1 to
    ``$first - 1``) and writes the audit record of that read, with the :func:`fields` as
    parameters ``$first`` on: outcome ok and status 200 when the query found a row, else
    not-found and 404, without detail. One statement is one transaction, as in
    :func:`record` on the reading connection, and one round trip instead of four."""
    who = ", ".join(f"${n}" for n in range(first, first + 5))
    return (
        f"WITH found AS ({query}), recorded AS ("
        "INSERT INTO audit_event (actor, role, client, action, target, outcome, status)"
        f" SELECT {who}, CASE WHEN hit THEN '{OK}' ELSE '{NOT_FOUND}' END,"
        " CASE WHEN hit THEN 200 ELSE 404 END"
        " FROM (SELECT EXISTS (SELECT FROM found) AS hit) AS answered)"
        " SELECT * FROM found" + (f" ORDER BY {order_by}" if order_by else "")
    )


async def record(
    connection: asyncpg.Connection, *, actor: str, role: str = "", client: str = "",
    action: str, target: str = "", outcome: str = OK, status: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await connection.execute(INSERT, *values(actor, role, client, action, target, outcome,
                                             status, detail))


async def read(
    pool: asyncpg.Pool, since: datetime | None = None, limit: int = 100,
    actor: str | None = None, before_id: int | None = None,
) -> list[AuditEvent]:
    """The newest records first (since a time, of one actor, older than a record)."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT id, at, actor, role, client, action, target, outcome, status, detail"
            " FROM audit_event WHERE ($1::timestamptz IS NULL OR at >= $1)"
            " AND ($2::text IS NULL OR actor = $2) AND ($3::bigint IS NULL OR id < $3)"
            " ORDER BY id DESC LIMIT $4",
            since, actor, before_id, limit)
    return [AuditEvent(r["id"], r["at"], r["actor"], r["role"], r["client"], r["action"],
                       r["target"], r["outcome"], r["status"], json.loads(r["detail"]))
            for r in rows]
