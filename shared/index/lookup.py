"""Reading the index backwards: from a pseudonymous patient ID to the original identifiers.

The answer is PHI. Callers decide who may see it and audit the read: ``anon lookup`` on the
operator's own terminal, the index API for a phi-reader token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from shared.index import audit


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


# The patient and its studies in one query: a row per study (oldest first), or one row with
# no study when the patient has none.
_PATIENT_AND_STUDIES = (
    "SELECT p.pseudo_patient_id, p.pseudo_patient_name, p.original_patient_id,"
    " p.original_issuer, p.original_patient_name, p.date_offset_days, s.pseudo_study_uid,"
    " s.pseudo_study_date, s.pseudo_accession, s.original_study_uid, s.original_study_date,"
    " s.original_accession, s.created_at AS study_created_at, s.id AS study_id"
    " FROM patient p LEFT JOIN study s ON s.patient = p.id WHERE p.pseudo_patient_id = $1"
)
_ORDER = "study_created_at, study_id"
_READ = f"SELECT * FROM ({_PATIENT_AND_STUDIES}) AS found ORDER BY {_ORDER}"
_READ_AUDITED = audit.read_recorded(_PATIENT_AND_STUDIES, 2, _ORDER)


def _identity(rows: list[asyncpg.Record]) -> PatientIdentity | None:
    if not rows:
        return None
    first = rows[0]
    return PatientIdentity(
        first["pseudo_patient_id"], first["pseudo_patient_name"], first["original_patient_id"],
        first["original_issuer"], first["original_patient_name"], first["date_offset_days"],
        [StudyIdentity(r["pseudo_study_uid"], r["pseudo_study_date"], r["pseudo_accession"],
                       r["original_study_uid"], r["original_study_date"],
                       r["original_accession"])
         for r in rows if r["study_id"] is not None],
    )


async def read_patient(
    connection: asyncpg.Connection, pseudo_patient_id: str
) -> PatientIdentity | None:
    """:func:`patient_by_pseudonym` on one connection, so that a caller can audit the read
    in the same transaction."""
    return _identity(await connection.fetch(_READ, pseudo_patient_id.strip()))


async def read_patient_audited(
    connection: asyncpg.Connection, pseudo_patient_id: str, record: tuple[str, ...]
) -> PatientIdentity | None:
    """:func:`read_patient` and its audit record (``record``: :func:`audit.fields`) in one
    statement: the record says ok when the patient was found, else not-found."""
    return _identity(await connection.fetch(_READ_AUDITED, pseudo_patient_id.strip(), *record))
