"""De-identifying one object with the pseudonyms held in the PHI index.

This joins the pure engine (``shared.deid``) and the index: read the object's original
identifiers, get (or allocate) its patient's pseudonyms, de-identify, record the study.
Every service and command that de-identifies objects goes through here, so they all agree.
"""

from __future__ import annotations

from shared.deid.context import Pseudonyms
from shared.deid.engine import Deidentified, Engine, identity
from shared.deid.rules import RuleSet
from shared.dicom.parse import DicomObject
from shared.index.phi_index import PhiIndex, Site, patient_key


class Pseudonymizer:
    """De-identifies objects for one site with one rule set."""

    def __init__(self, index: PhiIndex, site: Site, rules: RuleSet) -> None:
        self.index = index
        self.site = site
        self.engine = Engine(rules, site.secret)

    async def allocate(self, obj: DicomObject) -> str:
        """Make sure the object's patient has pseudonyms; returns the pseudonymous ID."""
        ident = identity(obj)
        key = patient_key(ident.patient_id, ident.issuer_of_patient_id, ident.study_instance_uid)
        return (await self.index.patient(key, ident.patient_name)).pseudo_patient_id

    async def deidentify(self, data: bytes) -> Deidentified:
        """De-identify PS3.10 bytes; raises ``RejectedObject`` with the reason."""
        obj = self.engine.read(data)
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
        result = self.engine.deidentify(obj, pseudonyms)
        await self.index.study(
            patient,
            original_study_uid=ident.study_instance_uid,
            pseudo_study_uid=result.study_instance_uid,
            original_study_date=ident.study_date,
            pseudo_study_date=result.study_date,
            original_accession=ident.accession_number,
        )
        return result
