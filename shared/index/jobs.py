"""Jobs in the index: retrieves from the PACS and exports, each with one item per study
(retrieve) or per patient (export).

A job's parameters and a retrieve item's key and study UID are PHI: they stay in the
index, and messages name a job and an item by number only. An item is worked by one
message at a time; its outcome is final once it leaves ``pending``/``running``/``waiting``,
and a job is finished when every item is: ``complete`` when every item is, ``failed`` when
any item failed, else ``incomplete``. Messages (``message``, ``summary``) are written for
an operator and hold no PHI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

RETRIEVE = "retrieve"
EXPORT = "export"

# Item statuses.
PENDING = "pending"
RUNNING = "running"
WAITING = "waiting"  # export: the study is not settled yet; tried again later
COMPLETE = "complete"
INCOMPLETE = "incomplete"
FAILED = "failed"
NOT_FOUND = "not-found"
AMBIGUOUS = "ambiguous"
OPEN_STATUSES = (PENDING, RUNNING, WAITING)
FINAL_STATUSES = (COMPLETE, INCOMPLETE, FAILED, NOT_FOUND, AMBIGUOUS)

# Counters an item reports (see migration 0007).
COUNTERS = ("expected", "verified", "missing", "remaining", "completed", "failed", "warning",
            "attempts")


@dataclass(frozen=True)
class NewItem:
    """An item to create: its key (a request key, or a pseudonymous patient ID), the line or
    row of the request it came from, a study UID when known, and a status other than
    pending when the request already decided it (a key that matched nothing)."""

    key: str
    line: int | None = None
    study_uid: str = ""
    status: str = PENDING
    message: str = ""


@dataclass(frozen=True)
class Item:
    job: int
    position: int
    line: int | None
    key: str
    study_uid: str
    status: str
    message: str
    counts: dict[str, int]
    updated_at: datetime

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def public(self, with_key: bool) -> dict[str, Any]:
        """The item as JSON: ``with_key`` adds its key (pseudonymous patient IDs of an
        export; a retrieve's keys are PHI and never included)."""
        shown: dict[str, Any] = {"position": self.position, "line": self.line,
                                 "status": self.status, "message": self.message,
                                 **self.counts, "updated_at": self.updated_at.isoformat()}
        if with_key:
            shown["key"] = self.key
        return shown


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    status: str
    summary: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    items: list[Item] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in (COMPLETE, INCOMPLETE, FAILED)

    def totals(self) -> dict[str, int]:
        totals = {name: sum(i.counts[name] for i in self.items) for name in COUNTERS}
        totals["items"] = len(self.items)
        totals["items_finished"] = sum(1 for i in self.items if i.finished)
        totals["items_complete"] = sum(1 for i in self.items if i.status == COMPLETE)
        return totals

    def public(self) -> dict[str, Any]:
        """The job as JSON for a command's answer and ``anon jobs --json`` (no PHI)."""
        return {
            "id": self.id, "kind": self.kind, "status": self.status, "summary": self.summary,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "totals": self.totals(),
            "items": [i.public(with_key=self.kind == EXPORT) for i in self.items],
        }


class JobNotFound(LookupError):
    """No job has this number."""


async def create_job(
    pool: asyncpg.Pool, kind: str, parameters: dict[str, Any], items: list[NewItem]
) -> int:
    """Create a job with its items (positions 1, 2, ...) in one transaction; its number."""
    async with pool.acquire() as connection, connection.transaction():
        job_id = await connection.fetchval(
            "INSERT INTO job (kind, parameters) VALUES ($1, $2::jsonb) RETURNING id",
            kind, json.dumps(parameters),
        )
        await connection.executemany(
            "INSERT INTO job_item (job, position, line, key, study_uid, status, message)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [(job_id, n, item.line, item.key, item.study_uid, item.status, item.message)
             for n, item in enumerate(items, start=1)],
        )
    await finish_if_done(pool, int(job_id))
    return int(job_id)


async def parameters(pool: asyncpg.Pool, job_id: int) -> dict[str, Any]:
    """The parameters a job was created with (PHI)."""
    async with pool.acquire() as connection:
        value = await connection.fetchval("SELECT parameters FROM job WHERE id = $1", job_id)
    if value is None:
        raise JobNotFound(f"no job {job_id}")
    loaded = json.loads(value) if isinstance(value, str) else value
    assert isinstance(loaded, dict)
    return loaded


def _item(row: asyncpg.Record) -> Item:
    return Item(row["job"], row["position"], row["line"], row["key"], row["study_uid"],
                row["status"], row["message"], {name: row[name] for name in COUNTERS},
                row["updated_at"])


async def item(pool: asyncpg.Pool, job_id: int, position: int) -> Item:
    async with pool.acquire() as connection:
        row = await connection.fetchrow(
            "SELECT * FROM job_item WHERE job = $1 AND position = $2", job_id, position)
    if row is None:
        raise JobNotFound(f"no item {position} in job {job_id}")
    return _item(row)


async def open_items(pool: asyncpg.Pool, kind: str | None = None) -> list[tuple[int, int]]:
    """(job, position) of every item not yet finished, oldest job first: what a service
    announces again when its queues were lost (``anon serve`` after a restart)."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT i.job, i.position FROM job_item i JOIN job j ON j.id = i.job"
            " WHERE i.status = ANY($1::text[]) AND ($2::text IS NULL OR j.kind = $2)"
            " ORDER BY i.job, i.position",
            list(OPEN_STATUSES), kind,
        )
    return [(row["job"], row["position"]) for row in rows]


async def update_item(
    pool: asyncpg.Pool, job_id: int, position: int, *, status: str | None = None,
    message: str | None = None, study_uid: str | None = None,
    totals: Mapping[str, int] | None = None, **counters: int,
) -> None:
    """Change an item's status, message, study UID and counters (``totals`` and keyword
    counters, e.g. ``expected=``); the job becomes running at its first change, and is
    finished when its last item is."""
    counts = {**(totals or {}), **counters}
    unknown = set(counts) - set(COUNTERS)
    if unknown:
        raise ValueError(f"unknown item counters: {sorted(unknown)}")
    assignments = ["updated_at = now()"]
    values: list[Any] = [job_id, position]
    for column, value in (("status", status), ("message", message), ("study_uid", study_uid),
                          *counts.items()):
        if value is not None:
            values.append(value)
            assignments.append(f"{column} = ${len(values)}")
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(
            f"UPDATE job_item SET {', '.join(assignments)} WHERE job = $1 AND position = $2",
            *values,
        )
        await connection.execute(
            "UPDATE job SET status = 'running', started_at = coalesce(started_at, now()),"
            " updated_at = now() WHERE id = $1 AND status = 'queued'",
            job_id,
        )
    if status is not None and status in FINAL_STATUSES:
        await finish_if_done(pool, job_id)


async def finish_if_done(pool: asyncpg.Pool, job_id: int) -> str | None:
    """Set the job's final status and summary once every item is finished; that status, or
    None while items remain."""
    async with pool.acquire() as connection, connection.transaction():
        rows = await connection.fetch(
            "SELECT status, count(*) AS n, sum(missing) AS missing FROM job_item"
            " WHERE job = $1 GROUP BY status",
            job_id,
        )
        by_status = {row["status"]: int(row["n"]) for row in rows}
        if not by_status or any(s in by_status for s in OPEN_STATUSES):
            return None
        total = sum(by_status.values())
        missing = sum(int(row["missing"] or 0) for row in rows)
        if by_status.get(FAILED):
            final = FAILED
        elif by_status.get(COMPLETE) == total:
            final = COMPLETE
        else:
            final = INCOMPLETE
        parts = [f"{n} {status}" for status, n in sorted(by_status.items())]
        summary = f"{total} item{'s' if total != 1 else ''}: " + ", ".join(parts)
        if missing:
            summary += f"; {missing} instance{'s' if missing != 1 else ''} missing"
        await connection.execute(
            "UPDATE job SET status = $2, summary = $3, finished_at = now(), updated_at = now()"
            " WHERE id = $1 AND finished_at IS NULL",
            job_id, final, summary,
        )
    return final


async def get_job(pool: asyncpg.Pool, job_id: int) -> Job:
    jobs = await list_jobs(pool, ids=[job_id])
    if not jobs:
        raise JobNotFound(f"no job {job_id}")
    return jobs[0]


async def list_jobs(
    pool: asyncpg.Pool, limit: int = 50, ids: list[int] | None = None
) -> list[Job]:
    """The newest jobs (or those of ``ids``) with their items, newest first."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT id, kind, status, summary, created_at, started_at, finished_at, updated_at"
            " FROM job WHERE ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))"
            " ORDER BY id DESC LIMIT $2",
            ids, limit,
        )
        item_rows = await connection.fetch(
            "SELECT * FROM job_item WHERE job = ANY($1::bigint[]) ORDER BY job, position",
            [row["id"] for row in rows],
        )
    items: dict[int, list[Item]] = {}
    for row in item_rows:
        items.setdefault(row["job"], []).append(_item(row))
    return [Job(row["id"], row["kind"], row["status"], row["summary"], row["created_at"],
                row["started_at"], row["finished_at"], row["updated_at"],
                items.get(row["id"], []))
            for row in rows]
