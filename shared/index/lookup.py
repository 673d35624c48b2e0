"""Reading the index backwards: from a pseudonymous patient ID to the original identifiers.

The answer is PHI. Callers decide who may see it and audit the read: ``anon lookup`` on the
operator's own terminal, the index API for a phi-reader token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg


@dataclass(frozen=True, slots=True)
class StudyIdentity:
    pseudo_study_uid: str
    pseudo_study_date: str
    pseudo_accession: str
    original_study_uid: str
    original_study_date: str
    original_accession: str


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    pseudo_patient_id: str
    pseudo_patient_name: str
    original_patient_id: str
    original_issuer: str
    original_patient_name: str
    date_offset_days: int
    studies: list[StudyIdentity] = field(default_factory=list)


async def patient_by_pseudonym(
    pool: asyncpg.Pool, pseudo_patient_id: str
) -> PatientIdentity | None:
    """The original identifiers of the patient known as ``pseudo_patient_id``, with their
    studies (oldest first); None when the index holds no such pseudonym."""
    async with pool.acquire() as connection:
        return await read_patient(connection, pseudo_patient_id)


async def read_patient(
    connection: asyncpg.Connection, pseudo_patient_id: str
) -> PatientIdentity | None:
    """:func:`patient_by_pseudonym` on one connection, so that a caller can audit the read
    in the same transaction."""
    row = await connection.fetchrow(
        "SELECT id, pseudo_patient_id, pseudo_patient_name, original_patient_id,"
        " original_issuer, original_patient_name, date_offset_days"
        " FROM patient WHERE pseudo_patient_id = $1",
        pseudo_patient_id.strip(),
    )
    if row is None:
        return None
    studies = await connection.fetch(
        "SELECT pseudo_study_uid, pseudo_study_date, pseudo_accession, original_study_uid,"
        " original_study_date, original_accession FROM study WHERE patient = $1"
        " ORDER BY created_at, id",
        row["id"],
    )
    return PatientIdentity(
        row["pseudo_patient_id"], row["pseudo_patient_name"], row["original_patient_id"],
        row["original_issuer"], row["original_patient_name"], row["date_offset_days"],
        [StudyIdentity(**dict(s)) for s in studies],
    )
