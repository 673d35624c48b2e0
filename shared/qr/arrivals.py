"""Which instances of a retrieve have reached the pipeline, by their original SOP Instance
UID, without putting a UID into a key or a log: a received object's key holds the SHA-256
of its SOP Instance UID (:func:`shared.ingest.uid_digest`), and so does an index on the
de-identified instances (migrations 0006 and 0007).

An instance has arrived when it was received (whatever happened next), de-identified, or
refused into quarantine. Refused ones are counted apart: asking the PACS again for them
would bring the same object, refused for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from shared.ingest import uid_digest

_DIGEST = "substring(key from '[0-9a-f]{64}')"


@dataclass(frozen=True)
class Arrivals:
    arrived: frozenset[str]
    quarantined: frozenset[str]


async def arrivals(pool: asyncpg.Pool, sop_instance_uids: Iterable[str]) -> Arrivals:
    """Of ``sop_instance_uids``, those that arrived and those of them quarantined."""
    by_digest = {uid_digest(uid): uid for uid in sop_instance_uids}
    if not by_digest:
        return Arrivals(frozenset(), frozenset())
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT d,"
            f" EXISTS (SELECT 1 FROM quarantined_object WHERE {_DIGEST} = d) AS quarantined,"
            f" (EXISTS (SELECT 1 FROM received_object WHERE {_DIGEST} = d)"
            "  OR EXISTS (SELECT 1 FROM instance WHERE uid_digest(original_sop_instance_uid) = d)"
            ") AS received"
            " FROM unnest($1::text[]) AS d",
            list(by_digest),
        )
    arrived = {by_digest[row["d"]] for row in rows if row["received"] or row["quarantined"]}
    quarantined = {by_digest[row["d"]] for row in rows if row["quarantined"]}
    return Arrivals(frozenset(arrived), frozenset(quarantined))


async def imported_studies(pool: asyncpg.Pool, study_uids: Iterable[str]) -> set[str]:
    """Of ``study_uids`` (original), those the index already holds."""
    uids = list(set(study_uids))
    if not uids:
        return set()
    async with pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT original_study_uid FROM study WHERE original_study_uid = ANY($1::text[])",
            uids)
    return {row["original_study_uid"] for row in rows}
