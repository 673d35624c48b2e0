"""The PHI index: site identity and the pseudonyms of patients and studies.

Pseudonymous patient IDs come from a database sequence, one per distinct original patient
(patient ID plus issuer), safe when many processes ask at once: an insert that loses a
race does nothing and the winner's row is read back. Date offsets and accession pseudonyms
are keyed functions of the site secret, so concurrent first requests agree on them too;
all are stored. Everything original stored here is PHI and must not be logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import asyncpg

MAX_DATE_OFFSET_DAYS = 3650


class SiteConflict(Exception):
    """The configured SITEID differs from the one fixed at first start."""


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    secret: bytes

    def keyed(self, purpose: str, *parts: str) -> int:
        """A keyed 256-bit integer of ``parts`` for one purpose (domain-separated HMAC)."""
        message = "\x00".join((purpose, *parts)).encode("utf-8", "surrogateescape")
        return int.from_bytes(hmac.new(self.secret, message, hashlib.sha256).digest(), "big")

    def date_offset(self, patient_key: tuple[str, str]) -> int:
        return 1 + self.keyed("date-offset", *patient_key) % MAX_DATE_OFFSET_DAYS

    def accession_pseudonym(self, study_uid: str, accession: str) -> str:
        # SH holds 16 characters.
        return f"{self.keyed('accession', study_uid, accession) % 10**16:016d}"


@dataclass(frozen=True, slots=True)
class PatientRecord:
    key: tuple[str, str]  # (original patient ID, issuer): PHI
    pseudo_patient_id: str
    pseudo_patient_name: str
    date_offset_days: int


@dataclass(frozen=True, slots=True)
class StudyRecord:
    pseudo_study_uid: str
    pseudo_accession: str


def patient_key(patient_id: str, issuer: str, study_uid: str) -> tuple[str, str]:
    """The identity of a patient; objects without a patient ID are a patient per study."""
    if patient_id.strip():
        return patient_id.strip(), issuer.strip()
    return "", "no-patient-id:" + study_uid


class PhiIndex:
    """Access to the PHI index; caches what it has read (rows never change once written)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._site: Site | None = None
        self._patients: dict[tuple[str, str], PatientRecord] = {}
        self._studies: dict[str, StudyRecord] = {}

    async def site(self, configured_site_id: str | None = None) -> Site:
        """The site identity, created at first use (with ``configured_site_id`` if given)."""
        if self._site is not None:
            return self._site
        if configured_site_id is not None and not (
            len(configured_site_id) == 6 and configured_site_id.isdigit()
        ):
            raise SiteConflict("SITE_ID must be six digits")
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow("SELECT site_id, secret FROM site")
            if row is None:
                new_id = configured_site_id or f"{secrets.randbelow(900000) + 100000}"
                await connection.execute(
                    "INSERT INTO site (site_id, secret) VALUES ($1, $2) "
                    "ON CONFLICT (singleton) DO NOTHING",
                    new_id,
                    secrets.token_bytes(32),
                )
                row = await connection.fetchrow("SELECT site_id, secret FROM site")
        assert row is not None
        if configured_site_id is not None and row["site_id"] != configured_site_id:
            raise SiteConflict(
                f"SITE_ID is {configured_site_id} but this index was created with site "
                f"{row['site_id']}; a SITEID is fixed at first start and never changes"
            )
        self._site = Site(row["site_id"], bytes(row["secret"]))
        return self._site

    async def patient(self, key: tuple[str, str], patient_name: str) -> PatientRecord:
        """The pseudonyms of a patient, allocating them at first sight."""
        found = self._patients.get(key)
        if found is not None:
            return found
        site = await self.site()
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(
                "INSERT INTO patient (original_patient_id, original_issuer,"
                " original_patient_name, pseudo_patient_id, pseudo_patient_name,"
                " date_offset_days)"
                " SELECT $1, $2, $3, p, p, $5"
                " FROM (SELECT $4 || '-' || lpad(nextval('patient_number_seq')::text, 6, '0')"
                "       AS p) AS n"
                " ON CONFLICT (original_patient_id, original_issuer) DO NOTHING"
                " RETURNING pseudo_patient_id, pseudo_patient_name, date_offset_days",
                key[0], key[1], patient_name, site.site_id, site.date_offset(key),
            )
            if row is None:  # known patient, or another process won the race
                row = await connection.fetchrow(
                    "SELECT pseudo_patient_id, pseudo_patient_name, date_offset_days"
                    " FROM patient WHERE original_patient_id = $1 AND original_issuer = $2",
                    key[0], key[1],
                )
        assert row is not None
        record = PatientRecord(
            key, row["pseudo_patient_id"], row["pseudo_patient_name"], row["date_offset_days"]
        )
        self._patients[key] = record
        return record

    async def study(
        self,
        patient: PatientRecord,
        original_study_uid: str,
        pseudo_study_uid: str,
        original_study_date: str,
        pseudo_study_date: str,
        original_accession: str,
    ) -> StudyRecord:
        """Record a study of a patient (first sight) and return its pseudonyms."""
        found = self._studies.get(original_study_uid)
        if found is not None:
            return found
        site = await self.site()
        accession = (
            site.accession_pseudonym(original_study_uid, original_accession)
            if original_accession.strip()
            else ""
        )
        async with self.pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO study (patient, original_study_uid, pseudo_study_uid,"
                " original_study_date, pseudo_study_date, original_accession, pseudo_accession)"
                " SELECT id, $3, $4, $5, $6, $7, $8 FROM patient"
                " WHERE original_patient_id = $1 AND original_issuer = $2"
                " ON CONFLICT DO NOTHING",  # any unique index: racing inserts of one study
                patient.key[0], patient.key[1], original_study_uid, pseudo_study_uid,
                original_study_date, pseudo_study_date, original_accession.strip(), accession,
            )
            row = await connection.fetchrow(
                "SELECT pseudo_study_uid, pseudo_accession FROM study"
                " WHERE original_study_uid = $1",
                original_study_uid,
            )
        assert row is not None
        record = StudyRecord(row["pseudo_study_uid"], row["pseudo_accession"])
        self._studies[original_study_uid] = record
        return record

    async def counts(self) -> dict[str, int]:
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(
                "SELECT (SELECT count(*) FROM patient) AS patients,"
                " (SELECT count(*) FROM study) AS studies"
            )
        assert row is not None
        return {"patients": row["patients"], "studies": row["studies"]}
