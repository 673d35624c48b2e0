"""The exporter's view of the index: what a patient has to send, whether its studies are
settled, per-instance statuses (``export_instance``) and the patient's export date.

Statuses are written in batches (one statement per batch, however many instances), so
recording never sets the pace of an export. Everything here is keyed by instance row,
pseudonymous patient ID and destination (``AE@host:port``); nothing read or written is PHI
except what stays inside these queries.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from shared.export.sender import Outcome
from shared.index import jobs

SENT = "sent"
FAILED = "failed"
LOCK_POLL_SECONDS = 0.5
# A pseudonymous patient ID of the built-in profile: SITEID-number.
_PSEUDONYM = re.compile(r"[0-9]{6}-[0-9]{6,}")


def looks_pseudonymous(key: str) -> bool:
    """Whether a requested key has the shape of a pseudonymous patient ID. A key that
    names no patient and has another shape may be an original ID typed by mistake (PHI),
    so it is not kept in the job."""
    return _PSEUDONYM.fullmatch(key) is not None


@dataclass(frozen=True)
class Planned:
    """One instance to send: its row, object key, SOP class and study row."""

    id: int
    key: str
    sop_class: str
    study: int | None


@dataclass
class Plan:
    """What a patient has for the destination: ``to_send`` now, ``already`` sent by this
    job (a resumed item), ``total`` stored objects."""

    to_send: list[Planned] = field(default_factory=list)
    already: int = 0
    total: int = 0


@dataclass(frozen=True)
class Unsettled:
    """Why a patient's studies are not settled yet, and when to look again."""

    studies: int
    reasons: list[str]
    recheck_seconds: float | None  # None: no time known (an RT set waits for objects)

    def message(self) -> str:
        noun = "study" if self.studies == 1 else "studies"
        return f"{self.studies} {noun} not settled: " + "; ".join(self.reasons)


async def known_patients(pool: asyncpg.Pool, keys: Sequence[str]) -> set[str]:
    """The keys that are pseudonymous patient IDs of the index (a patient row, or
    instances recorded under it)."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT k FROM unnest($1::text[]) AS k WHERE"
            " EXISTS (SELECT 1 FROM patient p WHERE p.pseudo_patient_id = k)"
            " OR EXISTS (SELECT 1 FROM instance i WHERE i.pseudo_patient_id = k)",
            list(keys),
        )
    return {row["k"] for row in rows}


async def pending_patients(pool: asyncpg.Pool, destination: str, every: bool = False
                           ) -> list[str]:
    """Pseudonymous IDs of the patients with a stored object not yet sent to the
    destination (``every``: with any stored object), in order."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT DISTINCT i.pseudo_patient_id AS patient FROM instance i"
            " WHERE i.object_key IS NOT NULL AND i.pseudo_patient_id <> ''"
            " AND ($2 OR NOT EXISTS (SELECT 1 FROM export_instance e WHERE e.instance = i.id"
            " AND e.destination = $1 AND e.status = 'sent'))"
            " ORDER BY 1",
            destination, every,
        )
    return [row["patient"] for row in rows]


async def plan(
    pool: asyncpg.Pool, patient: str, destination: str, job: int, force: bool
) -> Plan:
    """The patient's stored objects to send: those not sent to the destination (with
    ``force``: every one not sent by this job). Ordered by SOP class, so objects needing
    the same presentation context go together."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT i.id, i.object_key, i.sop_class_uid, i.study, e.status, e.job"
            " FROM instance i LEFT JOIN export_instance e"
            " ON e.instance = i.id AND e.destination = $2"
            " WHERE i.pseudo_patient_id = $1 AND i.object_key IS NOT NULL"
            " ORDER BY i.sop_class_uid, i.object_key",
            patient, destination,
        )
    result = Plan(total=len(rows))
    for row in rows:
        sent = row["status"] == SENT
        if sent and row["job"] == job:
            result.already += 1
        elif sent and not force:
            continue
        else:
            result.to_send.append(Planned(row["id"], row["object_key"], row["sop_class_uid"],
                                          row["study"]))
    return result


async def unsettled(
    pool: asyncpg.Pool, patient: str, studies: Sequence[int | None], quiet_seconds: float
) -> Unsettled | None:
    """None when every study of ``studies`` is settled: its RT set (if the study is one)
    complete, and no object of it arrived for ``quiet_seconds``; else why not."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT i.study, extract(epoch FROM now() - max(i.created_at))::float8 AS age,"
            " max(r.kind) AS kind, max(r.status) AS status"
            " FROM instance i LEFT JOIN study s ON s.id = i.study"
            " LEFT JOIN rt_set r ON r.pseudo_study_uid = s.pseudo_study_uid"
            " WHERE i.pseudo_patient_id = $1"
            " AND (i.study = ANY($2::bigint[]) OR (i.study IS NULL AND $3))"
            " GROUP BY i.study",
            patient, [s for s in studies if s is not None], None in studies,
        )
    count = 0
    rt_statuses: dict[str, None] = {}
    youngest: float | None = None
    for row in rows:
        rt_waiting = row["kind"] == "rt" and row["status"] != "complete"
        age = float(row["age"] or 0.0)
        too_recent = age < quiet_seconds
        if rt_waiting:
            rt_statuses[str(row["status"])] = None
        if too_recent:
            youngest = age if youngest is None else min(youngest, age)
        if rt_waiting or too_recent:
            count += 1
    if not count:
        return None
    reasons = [f"RT set {status}" for status in rt_statuses]
    if youngest is not None:
        reasons.append(f"last object {youngest:.0f} s ago")
    recheck = None if rt_statuses or youngest is None else quiet_seconds - youngest
    return Unsettled(count, reasons, recheck)


async def record(
    pool: asyncpg.Pool, destination: str, job: int, outcomes: Sequence[Outcome]
) -> None:
    """Write the outcomes (one statement): sent or failed with the reason, one attempt
    more per instance. Of several outcomes of one instance the last counts."""
    latest = {o.instance: o for o in outcomes}
    if not latest:
        return
    async with pool.acquire() as connection:
        await connection.execute(
            "INSERT INTO export_instance AS e (instance, destination, status, reason, job)"
            " SELECT u.id, $2, u.status, u.reason, $3"
            " FROM unnest($1::bigint[], $4::text[], $5::text[]) AS u(id, status, reason)"
            " ON CONFLICT (instance, destination) DO UPDATE SET status = excluded.status,"
            " reason = excluded.reason, attempts = e.attempts + 1, job = excluded.job,"
            " updated_at = now()",
            list(latest), destination, job,
            [SENT if o.accepted else FAILED for o in latest.values()],
            [o.reason for o in latest.values()],
        )


async def mark_exported(pool: asyncpg.Pool, patient: str, destination: str,
                        sent_now: bool) -> bool:
    """Set the patient's export date when every stored object of the patient is sent to
    the destination (and something was sent now, or no date is set yet); whether every
    object is sent."""
    async with pool.acquire() as connection:
        complete = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM instance i WHERE i.pseudo_patient_id = $1"
            " AND i.object_key IS NOT NULL)"
            " AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.pseudo_patient_id = $1"
            " AND i.object_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM export_instance e"
            " WHERE e.instance = i.id AND e.destination = $2 AND e.status = 'sent'))",
            patient, destination,
        )
        if complete:
            await connection.execute(
                "UPDATE patient SET exported_at = now() WHERE pseudo_patient_id = $1"
                " AND ($2 OR exported_at IS NULL)",
                patient, sent_now,
            )
    return bool(complete)


async def waiting_items(pool: asyncpg.Pool) -> list[tuple[int, int, float]]:
    """(job, position, seconds since its last change) of every waiting export item."""
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT i.job, i.position,"
            " extract(epoch FROM now() - i.updated_at)::float8 AS age"
            " FROM job_item i JOIN job j ON j.id = i.job"
            " WHERE j.kind = $1 AND i.status = $2 ORDER BY i.job, i.position",
            jobs.EXPORT, jobs.WAITING,
        )
    return [(row["job"], row["position"], float(row["age"])) for row in rows]


@asynccontextmanager
async def patient_lock(pool: asyncpg.Pool, patient: str, destination: str) -> AsyncIterator[None]:
    """Hold the export of one patient to one destination: a second item for the same
    patient (two requests, or a message delivered twice) waits here until the first is
    done, then finds nothing new to send. A PostgreSQL advisory lock, so it holds across
    processes and goes with the connection if a process dies."""
    name = f"export:{destination}:{patient}"
    async with pool.acquire() as connection:
        while not await connection.fetchval(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", name):
            await asyncio.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            await connection.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", name)
