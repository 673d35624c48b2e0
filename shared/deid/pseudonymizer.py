"""De-identifying one object with the pseudonyms held in the PHI index.

This joins the pure engine (``shared.deid``) and the index: read the object's original
identifiers, get (or allocate) its patient's pseudonyms and any counter values the rules
need, de-identify, record the study and the instance (with the identity of the rule set).
Every service and command that de-identifies objects goes through here, so they all agree.

A study's UID and accession pseudonyms are keyed functions of the site secret, so they need
no lookup; but a study imported from the RSNA Anonymizer's index (``anon index
import-rsna``) was given other pseudonyms there, and new objects of it must carry those,
in StudyInstanceUID and wherever the object refers to the study.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from shared.deid.context import Pseudonyms
from shared.deid.ctp_filter import ObjectFilter, identifying_pixels
from shared.deid.engine import Deidentified, Engine, NeedsIntegers, ObjectIdentity, identity
from shared.deid.rules import RuleSet
from shared.dicom.output import Buffer
from shared.dicom.parse import DicomObject
from shared.index.phi_index import InstanceRecord, PhiIndex, Site, patient_key


def instance_record(
    ident: ObjectIdentity, result: Deidentified, rules: RuleSet,
    burned_in_annotation_accepted: bool = False,
) -> InstanceRecord:
    """What the index records of one de-identified object and the rules that made it
    (and whether an operator accepted pixels flagged as identifying)."""
    return InstanceRecord(
        original_study_uid=ident.study_instance_uid,
        original_sop_instance_uid=ident.sop_instance_uid,
        pseudo_sop_instance_uid=result.sop_instance_uid,
        original_series_uid=ident.series_instance_uid,
        pseudo_series_uid=result.series_instance_uid,
        pseudo_patient_id=result.patient_id,
        sop_class_uid=result.sop_class_uid,
        modality=result.modality,
        size_bytes=result.size,
        script_name=rules.name,
        script_sha256=rules.sha256,
        burned_in_annotation_accepted=burned_in_annotation_accepted,
    )


# Objects smaller than this are parsed and de-identified on the event loop even when the
# engine is offloaded: a few milliseconds at most (a 10 KB CT slice takes about one), less
# than the two thread hops cost in CPU; larger ones go to a thread.
OFFLOAD_BYTES = 64 * 1024


class Pseudonymizer:
    """De-identifies objects for one site with one rule set.

    Instance records are written in batches of ``batch_size`` (call :meth:`flush` before
    relying on them); a batch size of 1 writes each record before ``deidentify`` returns.
    With ``offload`` (the default) parsing and the engine run in a worker thread, off the
    event loop, for objects of ``OFFLOAD_BYTES`` and more; a batch process whose loop has
    nothing else to do turns it off.
    """

    def __init__(
        self,
        index: PhiIndex,
        site: Site,
        rules: RuleSet,
        object_filter: ObjectFilter | None = None,
        batch_size: int = 1,
        offload: bool = True,
    ) -> None:
        self.index = index
        self.site = site
        self.rules = rules
        self.object_filter = object_filter or ObjectFilter()
        self.engine = Engine(rules, site.secret)
        self.batch_size = batch_size
        self.offload = offload
        self._pending: list[InstanceRecord] = []
        self._integers: dict[tuple[str, str], int] = {}

    async def deidentify(self, data: Buffer) -> Deidentified:
        """Filter and de-identify PS3.10 bytes; raises ``RejectedObject`` (``FilteredOut``
        for objects the filter refuses) with the reason. The instance record is written
        with the next batch (see :meth:`flush`)."""
        result, record = await self.prepare(data)
        await self.record(record)
        return result

    async def record(self, record: InstanceRecord) -> None:
        """Queue an instance record for the next batch (written at once when it is full)."""
        self._pending.append(record)
        if len(self._pending) >= self.batch_size:
            await self.flush()

    async def prepare(
        self, data: Buffer, accept_burned_in_annotation: bool = False
    ) -> tuple[Deidentified, InstanceRecord]:
        """Filter and de-identify, returning the instance record for the caller to write
        once the result is stored (``PhiIndex.record_instances``).
        ``accept_burned_in_annotation`` accepts this one object even if the filter refuses
        flagged pixels (an operator released it knowingly from quarantine)."""
        # Parsing and the engine are CPU work: they run in a thread, so the event loop
        # (heartbeats, other objects in flight) never waits for them. The engine is pure per
        # call; its caches are plain dict reads and writes.
        object_filter = self.object_filter
        if accept_burned_in_annotation:
            object_filter = replace(object_filter, reject_identifying_pixels=False)
        # A small object costs less on the loop than the two hops to a thread and back.
        offload = self.offload and len(data) >= OFFLOAD_BYTES
        if offload:
            obj = await asyncio.to_thread(self._read, data, object_filter)
        else:
            obj = self._read(data, object_filter)
        ident = identity(obj)
        key = patient_key(ident.patient_id, ident.issuer_of_patient_id, ident.study_instance_uid)
        patient = await self.index.patient(key, ident.patient_name)
        pseudonyms = Pseudonyms(
            patient_id=patient.pseudo_patient_id,
            patient_name=patient.pseudo_patient_name,
            date_offset_days=patient.date_offset_days,
            accession_number=self.site.accession_pseudonym(
                ident.study_instance_uid, ident.accession_number.strip()
            ),
        )
        pseudonyms = await self._imported(ident, pseudonyms)
        result = await self._run_engine(obj, pseudonyms, offload)
        await self.index.study(
            patient,
            original_study_uid=ident.study_instance_uid,
            pseudo_study_uid=result.study_instance_uid,
            original_study_date=ident.study_date,
            pseudo_study_date=result.study_date,
            original_accession=ident.accession_number,
        )
        # The filter let a flagged object through only because an operator accepts them.
        accepted = identifying_pixels(obj) is not None
        return result, instance_record(ident, result, self.rules, accepted)

    async def _imported(self, ident: ObjectIdentity, pseudonyms: Pseudonyms) -> Pseudonyms:
        """The pseudonyms with those the index holds for an imported study (its UID and
        accession number from the other system, wherever they appear in the object); as
        they were for a study this system saw first, whose stored pseudonyms are keyed.
        The index caches what it read, so only an object of a study not seen yet costs a
        query."""
        if not ident.study_instance_uid:
            return pseudonyms
        stored = await self.index.known_study(ident.study_instance_uid)
        if stored is None or not stored.imported:
            return pseudonyms
        known_accessions: tuple[tuple[str, str], ...] = ()
        accession = pseudonyms.accession_number
        if stored.original_accession and stored.pseudo_accession:
            known_accessions = ((stored.original_accession, stored.pseudo_accession),)
            if ident.accession_number.strip() == stored.original_accession:
                accession = stored.pseudo_accession
        return replace(
            pseudonyms,
            accession_number=accession,
            known_uids=((ident.study_instance_uid, stored.pseudo_study_uid),),
            known_accessions=known_accessions,
        )

    def _read(self, data: Buffer, object_filter: ObjectFilter) -> DicomObject:
        obj = self.engine.read(data)
        object_filter.check(obj)
        return obj

    async def _run_engine(
        self, obj: DicomObject, pseudonyms: Pseudonyms, offload: bool
    ) -> Deidentified:
        """Run the engine, allocating the counter values it asks for (at most twice: the
        second run has every value the first one asked for)."""
        for _ in range(3):
            try:
                if not offload:
                    return self.engine.deidentify(obj, pseudonyms, self._integers)
                return await asyncio.to_thread(
                    self.engine.deidentify, obj, pseudonyms, self._integers
                )
            except NeedsIntegers as needed:
                for key_type, key_value in sorted(needed.keys):
                    self._integers[(key_type, key_value)] = await self.index.integer(
                        key_type, key_value
                    )
                if len(self._integers) > 100_000:
                    self._integers = {k: self._integers[k] for k in needed.keys}
        raise RuntimeError("the rules keep asking for new counter values")

    async def flush(self) -> None:
        """Write the pending instance records."""
        pending, self._pending = self._pending, []
        await self.index.record_instances(pending)
