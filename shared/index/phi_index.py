"""The PHI index: site identity and the pseudonyms of patients and studies.

Pseudonymous patient IDs are numbered by the counter 'patient' (one number per distinct
original patient ID plus issuer; CTP scripts' @integer counters work the same way), safe when
many processes ask at once: an insert that loses a race does nothing and the winner's row
is read back. Date offsets and accession pseudonyms
are keyed functions of the site secret, so concurrent first requests agree on them too;
all are stored. Everything original stored here is PHI and must not be logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import asyncpg

from shared.index.cache import LruCache
from shared.index.coalesce import Coalescer
from shared.index.errors import SiteConflict

MAX_DATE_OFFSET_DAYS = 3650


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
    # Imported from another system's index (the RSNA Anonymizer): its pseudonyms are not
    # the keyed ones, so new objects of the study take them from here. The original
    # accession number (PHI) tells which accession number the stored pseudonym replaces.
    imported: bool = False
    original_accession: str = ""


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One de-identified object, as the index records it."""

    original_study_uid: str
    original_sop_instance_uid: str
    pseudo_sop_instance_uid: str
    original_series_uid: str
    pseudo_series_uid: str
    pseudo_patient_id: str
    sop_class_uid: str
    modality: str
    size_bytes: int
    script_name: str
    script_sha256: str
    burned_in_annotation_accepted: bool = False
    # Where the de-identified object is stored (the de-identified bucket), if it is.
    object_key: str | None = None


PATIENT_KEY_TYPE = "patient"
# SQL: the object a receipt's key stands for, i.e. the key without its per-receipt suffix.
_SUFFIX = r"'\.[0-9a-f]{12}\.dcm$'"
_OBJECT_OF_KEY = f"regexp_replace(key, {_SUFFIX}, '')"


_STUDY_QUERY = (
    "SELECT pseudo_study_uid, pseudo_accession, imported, original_accession FROM study"
    " WHERE original_study_uid = $1"
)


def _study_record(row: asyncpg.Record) -> StudyRecord:
    return StudyRecord(row["pseudo_study_uid"], row["pseudo_accession"], row["imported"],
                       row["original_accession"])


def patient_counter_key(key: tuple[str, str]) -> str:
    """The value under which a patient is numbered in the 'patient' counter: the patient ID,
    followed by a backslash and the issuer when there is one, each with its own backslashes
    doubled, so that ID ``A\\B`` without issuer and ID ``A`` of issuer ``B`` differ.
    Values without a backslash keep the plain form (see migration 0005)."""
    patient_id, issuer = (part.replace("\\", "\\\\") for part in key)
    return patient_id if not issuer else f"{patient_id}\\{issuer}"


def patient_key(patient_id: str, issuer: str, study_uid: str) -> tuple[str, str]:
    """The identity of a patient; objects without a patient ID are a patient per study."""
    if patient_id.strip():
        return patient_id.strip(), issuer.strip()
    return "", "no-patient-id:" + study_uid


# Entries each cache of a PhiIndex keeps (least recently used forgotten first): a worker
# that runs for months keeps a bounded memory; a forgotten entry is read again.
CACHE_SIZE = 20_000


class PhiIndex:
    """Access to the PHI index; caches what it has read (rows never change once written),
    at most ``cache_size`` patients, studies and counter values each."""

    def __init__(self, pool: asyncpg.Pool, cache_size: int = CACHE_SIZE) -> None:
        self.pool = pool
        self._site: Site | None = None
        self._patients: LruCache[tuple[str, str], PatientRecord] = LruCache(cache_size)
        self._studies: LruCache[str, StudyRecord] = LruCache(cache_size)
        self._integers: LruCache[tuple[str, str], int] = LruCache(cache_size)
        # The writes of the objects in flight go in together (see shared.index.coalesce).
        self._received: Coalescer[tuple[str, str, str, int], None] = Coalescer(
            self._write_received)
        self._instances: Coalescer[InstanceRecord, bool] = Coalescer(self._write_instances)

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

    async def integer(self, key_type: str, key_value: str) -> int:
        """The number of ``key_value`` in the counter ``key_type`` (1, 2, ... per key type),
        allocated at first request; concurrent requests for one key get one number."""
        cache_key = (key_type, key_value)
        found = self._integers.get(cache_key)
        if found is not None:
            return found
        async with self.pool.acquire() as connection:
            number = await connection.fetchval(
                "SELECT value FROM integer_value WHERE key_type = $1 AND key_value = $2",
                key_type, key_value,
            )
            if number is None:
                async with connection.transaction():
                    await connection.execute(
                        "INSERT INTO integer_key_type (key_type) VALUES ($1)"
                        " ON CONFLICT DO NOTHING",
                        key_type,
                    )
                    # The row lock taken here serialises allocation within a key type.
                    candidate = await connection.fetchval(
                        "UPDATE integer_key_type SET last_value = last_value + 1"
                        " WHERE key_type = $1 RETURNING last_value",
                        key_type,
                    )
                    number = await connection.fetchval(
                        "INSERT INTO integer_value (key_type, key_value, value)"
                        " VALUES ($1, $2, $3) ON CONFLICT (key_type, key_value) DO NOTHING"
                        " RETURNING value",
                        key_type, key_value, candidate,
                    )
                if number is None:  # another process numbered this key first
                    number = await connection.fetchval(
                        "SELECT value FROM integer_value WHERE key_type = $1 AND key_value = $2",
                        key_type, key_value,
                    )
        assert number is not None
        self._integers[cache_key] = int(number)
        return int(number)

    async def patient(self, key: tuple[str, str], patient_name: str) -> PatientRecord:
        """The pseudonyms of a patient, allocating them at first sight. A patient imported
        from the RSNA Anonymizer (by ID, without issuer) is also the patient of that ID with
        any issuer the index does not know otherwise."""
        found = self._patients.get(key)
        if found is not None:
            return found
        if key[0] and key[1]:
            # Known already, or imported from the RSNA Anonymizer, which knew a patient by
            # the ID alone: then no number is allocated for this ID and issuer.
            async with self.pool.acquire() as connection:
                row = await connection.fetchrow(
                    "SELECT pseudo_patient_id, pseudo_patient_name, date_offset_days"
                    " FROM patient WHERE original_patient_id = $1"
                    " AND (original_issuer = $2 OR (original_issuer = '' AND imported))"
                    " ORDER BY original_issuer = $2 DESC LIMIT 1",
                    key[0], key[1],
                )
            if row is not None:
                record = PatientRecord(key, row["pseudo_patient_id"],
                                       row["pseudo_patient_name"], row["date_offset_days"])
                self._patients[key] = record
                return record
        site = await self.site()
        number = await self.integer(PATIENT_KEY_TYPE, patient_counter_key(key))
        pseudo = f"{site.site_id}-{number:06d}"
        async with self.pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO patient (original_patient_id, original_issuer,"
                " original_patient_name, pseudo_patient_id, pseudo_patient_name,"
                " date_offset_days) VALUES ($1, $2, $3, $4, $4, $5)"
                " ON CONFLICT DO NOTHING",
                key[0], key[1], patient_name, pseudo, site.date_offset(key),
            )
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

    async def record_instance(self, instance: InstanceRecord) -> bool:
        """Record one de-identified object, in one write with the other objects in flight
        (as :meth:`record_instances`); True when it was new."""
        return await self._instances.submit(instance)

    async def _write_instances(self, instances: list[InstanceRecord]) -> list[bool]:
        new = await self.record_instances(instances)
        # A batch that holds one object twice wrote its last copy: only that one is new.
        last = {i.original_sop_instance_uid: n for n, i in enumerate(instances)}
        return [i.original_sop_instance_uid in new and last[i.original_sop_instance_uid] == n
                for n, i in enumerate(instances)]

    async def record_instances(self, instances: list[InstanceRecord]) -> set[str]:
        """Record de-identified objects in one round trip; an object recorded before is
        left as it was (re-runs and redeliveries change nothing). Returns the original SOP
        Instance UIDs that were new, so callers count each object once.

        An object de-identified again under other rules (another script or profile, or
        burned-in annotation now accepted) overwrote its output: its row then takes the
        new rules' identity and what they produced, and is not counted as new."""
        if not instances:
            return set()
        # One row per object: a batch may hold the same object twice (two copies of a file).
        instances = list({i.original_sop_instance_uid: i for i in instances}.values())
        columns = list(zip(
            *((i.original_study_uid, i.original_sop_instance_uid, i.pseudo_sop_instance_uid,
               i.original_series_uid, i.pseudo_series_uid, i.pseudo_patient_id,
               i.sop_class_uid, i.modality, i.size_bytes, i.script_name, i.script_sha256,
               i.burned_in_annotation_accepted, i.object_key)
              for i in instances),
            strict=True,
        ))
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                "INSERT INTO instance (study, original_sop_instance_uid,"
                " pseudo_sop_instance_uid, original_series_uid, pseudo_series_uid,"
                " pseudo_patient_id, sop_class_uid, modality, size_bytes, script_name,"
                " script_sha256, burned_in_annotation_accepted, object_key)"
                " SELECT (SELECT id FROM study WHERE original_study_uid = u.study_uid),"
                " u.sop, u.pseudo_sop, u.series, u.pseudo_series, u.patient, u.sop_class,"
                " u.modality, u.size, u.script_name, u.script_sha256, u.accepted, u.object_key"
                " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
                " $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[],"
                " $12::boolean[], $13::text[])"
                " AS u(study_uid, sop, pseudo_sop, series, pseudo_series, patient, sop_class,"
                " modality, size, script_name, script_sha256, accepted, object_key)"
                " ON CONFLICT (original_sop_instance_uid) DO UPDATE SET"
                " pseudo_sop_instance_uid = excluded.pseudo_sop_instance_uid,"
                " pseudo_series_uid = excluded.pseudo_series_uid,"
                " pseudo_patient_id = excluded.pseudo_patient_id,"
                " size_bytes = excluded.size_bytes, script_name = excluded.script_name,"
                " script_sha256 = excluded.script_sha256,"
                " burned_in_annotation_accepted = excluded.burned_in_annotation_accepted,"
                " object_key = coalesce(excluded.object_key, instance.object_key)"
                " WHERE (instance.script_name, instance.script_sha256,"
                " instance.pseudo_sop_instance_uid, instance.burned_in_annotation_accepted,"
                " instance.object_key)"
                " IS DISTINCT FROM (excluded.script_name, excluded.script_sha256,"
                " excluded.pseudo_sop_instance_uid, excluded.burned_in_annotation_accepted,"
                " coalesce(excluded.object_key, instance.object_key))"
                " RETURNING original_sop_instance_uid, (xmax = 0) AS inserted",
                *columns,
            )
        return {row["original_sop_instance_uid"] for row in rows if row["inserted"]}

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
                # By pseudonym: an imported patient's key may lack the object's issuer.
                " SELECT id, $2, $3, $4, $5, $6, $7 FROM patient WHERE pseudo_patient_id = $1"
                " ON CONFLICT DO NOTHING",  # any unique index: racing inserts of one study
                patient.pseudo_patient_id, original_study_uid, pseudo_study_uid,
                original_study_date, pseudo_study_date, original_accession.strip(), accession,
            )
            row = await connection.fetchrow(_STUDY_QUERY, original_study_uid)
        assert row is not None
        record = _study_record(row)
        self._studies[original_study_uid] = record
        return record

    async def known_study(self, original_study_uid: str) -> StudyRecord | None:
        """The stored pseudonyms of a study the index holds, None for a study it does not
        hold (yet); what was found is cached with the studies :meth:`study` reads."""
        found = self._studies.get(original_study_uid)
        if found is not None:
            return found
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(_STUDY_QUERY, original_study_uid)
        if row is None:
            return None
        record = _study_record(row)
        self._studies[original_study_uid] = record
        return record

    async def record_received(
        self, key: str, source: str, calling_ae: str, size_bytes: int
    ) -> None:
        """Note that an object was received (again: nothing changes), in one write with
        the other objects in flight."""
        await self._received.submit((key, source, calling_ae, size_bytes))

    async def _write_received(self, received: list[tuple[str, str, str, int]]) -> list[None]:
        keys, sources, calling_aes, sizes = zip(*received, strict=True)
        async with self.pool.acquire() as connection:
            await connection.execute(
                "INSERT INTO received_object (key, source, calling_ae, size_bytes)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])"
                " ON CONFLICT DO NOTHING",
                keys, sources, calling_aes, sizes,
            )
        return [None] * len(received)

    async def record_quarantined(self, key: str, stage: str, code: str, reason: str) -> bool:
        """Note that an object was refused, with the reason (first reason kept); True when
        the object was not quarantined before, neither under this key (a redelivery) nor
        under another receipt of it (a duplicate): only then is it counted."""
        async with self.pool.acquire() as connection:
            inserted = await connection.fetchval(
                "INSERT INTO quarantined_object (key, stage, reason_code, reason)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
                " RETURNING NOT EXISTS (SELECT 1 FROM quarantined_object"
                f" WHERE {_OBJECT_OF_KEY} = regexp_replace($1, {_SUFFIX}, ''))",
                key, stage, code, reason,
            )
        return bool(inserted)

    async def pipeline_counts(self) -> dict[str, int]:
        """Objects received, de-identified and quarantined so far, each counted once.

        A receipt's key is ``<digest>.<unique suffix>.dcm`` (``shared.ingest.object_key``:
        the digest of its SOP Instance UID, or of its bytes when unreadable), so an object
        received twice has two rows; ``received`` and ``quarantined`` count distinct keys
        without the suffix, i.e. distinct objects. ``deidentified`` counts instances, one
        per original SOP Instance UID."""
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(
                f"SELECT (SELECT count(DISTINCT {_OBJECT_OF_KEY}) FROM received_object)"
                " AS received,"
                " (SELECT count(*) FROM instance) AS deidentified,"
                f" (SELECT count(DISTINCT {_OBJECT_OF_KEY}) FROM quarantined_object)"
                " AS quarantined,"
                " (SELECT count(*) FROM patient) AS patients,"
                " (SELECT count(*) FROM study) AS studies,"
                " (SELECT count(*) FROM rt_set WHERE status = 'complete') AS sets_complete,"
                " (SELECT count(*) FROM rt_set WHERE status = 'waiting') AS sets_waiting,"
                " (SELECT count(*) FROM rt_set WHERE status = 'inconsistent')"
                " AS sets_inconsistent"
            )
        assert row is not None
        return dict(row)
