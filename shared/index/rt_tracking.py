"""The RT batch's tracking rows, kept in the PHI index as well as in its files.

``anon rt-batch`` writes ``tracking_YYYYMMDD.csv`` into its output folder, the one place
linking a set's original patient ID to its new one (``shared.rt.report``). That folder is
wherever the physicist ran the batch; the same rows go into the index (table
``rt_tracking``, migration 0009), so the index API can give a day's file to those who may
read PHI. The rows follow the file's rule: per run date, one row per new patient ID, a later
run of the same day replacing its rows and keeping the others. Original patient IDs and
plan labels are PHI.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import NamedTuple

import asyncpg

from shared.rt.report import tracking_text


class TrackingDay(NamedTuple):
    """A day on which the RT batch wrote tracking rows, and how many rows it holds."""

    day: datetime.date
    rows: int


async def record_tracking(
    pool: asyncpg.Pool, day: datetime.date, rows: Sequence[Sequence[str]]
) -> None:
    """Record a run's tracking rows (original patient ID, new patient ID, original plan
    ID, hospital) under ``day`` in one statement, replacing the day's rows of the same new
    patient IDs."""
    if not rows:
        return
    latest = {row[1]: row for row in rows}  # one row per new ID, the last one, as the file
    columns = list(zip(*latest.values(), strict=True))
    async with pool.acquire() as connection:
        await connection.execute(
            "INSERT INTO rt_tracking (run_date, original_patient_id, new_patient_id,"
            " original_plan_id, hospital)"
            " SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])"
            " ON CONFLICT (run_date, new_patient_id) DO UPDATE SET"
            " original_patient_id = excluded.original_patient_id,"
            " original_plan_id = excluded.original_plan_id, hospital = excluded.hospital,"
            " updated_at = now()",
            day, *(list(column) for column in columns),
        )


async def tracking_dates(pool: asyncpg.Pool) -> list[TrackingDay]:
    """The days with tracking rows, newest first, with their numbers of rows."""
    async with pool.acquire() as connection:
        found = await connection.fetch(
            "SELECT run_date, count(*) AS rows FROM rt_tracking GROUP BY run_date"
            " ORDER BY run_date DESC"
        )
    return [TrackingDay(row["run_date"], row["rows"]) for row in found]


async def tracking_csv(pool: asyncpg.Pool, day: datetime.date) -> str:
    """The tracking file of ``day`` as ``anon rt-batch`` writes it (header and rows sorted
    by new patient ID; the header alone for a day without rows)."""
    async with pool.acquire() as connection:
        found = await connection.fetch(
            "SELECT original_patient_id, new_patient_id, original_plan_id, hospital"
            " FROM rt_tracking WHERE run_date = $1",
            day,
        )
    # Sorted as the file is, by Python's order of the text, not the database's collation.
    rows = sorted((list(row.values()) for row in found), key=lambda row: row[1])
    return tracking_text(rows)
