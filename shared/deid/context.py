"""What the engine knows about one object while de-identifying it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.dicom.parse import DicomObject, Element, Item
from shared.dicom.uids import UidMapper

# Top-level attributes whose values are identifying terms to strip from free text when a
# text element is cleaned (PS3.15 E.3.5: descriptors may repeat the patient's identity).
_IDENTIFYING_TAGS = (
    0x00100010,  # PatientName
    0x00100020,  # PatientID
    0x00101000,  # OtherPatientIDs
    0x00101001,  # OtherPatientNames
    0x00101005,  # PatientBirthName
    0x00101060,  # PatientMotherBirthName
    0x00100030,  # PatientBirthDate
    0x00101040,  # PatientAddress
    0x00102154,  # PatientTelephoneNumbers
    0x00080050,  # AccessionNumber
    0x00200010,  # StudyID
    0x00080080,  # InstitutionName
    0x00080081,  # InstitutionAddress
    0x00080090,  # ReferringPhysicianName
    0x00081050,  # PerformingPhysicianName
    0x00081060,  # NameOfPhysiciansReadingStudy
    0x00081070,  # OperatorsName
    0x00081048,  # PhysiciansOfRecord
    0x00321032,  # RequestingPhysician
    0x00401001,  # RequestedProcedureID
)


@dataclass(frozen=True, slots=True)
class Pseudonyms:
    """Replacement identity of one patient and study, from the PHI index."""

    patient_id: str
    patient_name: str
    date_offset_days: int
    accession_number: str = ""


@dataclass(slots=True)
class ObjectContext:
    """Per-object state: the parsed object, its pseudonyms and the UID mapper."""

    obj: DicomObject
    pseudonyms: Pseudonyms
    uids: UidMapper
    # Counter values (key type, key value) -> number, from the PHI index; a key asked for
    # but not yet allocated is recorded in ``missing_integers`` (see NeedsIntegers).
    integers: dict[tuple[str, str], int] = field(default_factory=dict)
    missing_integers: set[tuple[str, str]] = field(default_factory=set)
    # The sequence items being processed, innermost last (empty at the top level).
    items: list[Item] = field(default_factory=list)
    _terms: re.Pattern[str] | None = field(default=None)

    def integer(self, key_type: str, key_value: str) -> int:
        """A counter value; 0 (and the key noted as missing) if not allocated yet."""
        number = self.integers.get((key_type, key_value))
        if number is None:
            self.missing_integers.add((key_type, key_value))
            return 0
        return number

    def text(self, element: Element) -> str:
        return self.obj.text(element)

    @property
    def item(self) -> Item:
        """The data set being processed: the current sequence item, or the top level."""
        return self.items[-1] if self.items else self.obj.dataset

    def identifying_terms(self) -> re.Pattern[str] | None:
        """A pattern matching the object's own identifying values (names split into
        components), used to clean free text; None when the object has none."""
        if self._terms is None:
            terms: set[str] = set()
            for tag in _IDENTIFYING_TAGS:
                value = self.obj.get_text(tag)
                if not value:
                    continue
                for part in re.split(r"[\^=\\]", value):
                    part = part.strip()
                    if len(part) >= 3:
                        terms.add(part)
                if "^" in value:
                    terms.add(value.replace("^", " ").strip())
            if not terms:
                self._terms = re.compile(r"(?!)")
            else:
                alternatives = sorted(terms, key=len, reverse=True)
                self._terms = re.compile(
                    "|".join(re.escape(t) for t in alternatives), re.IGNORECASE
                )
        return self._terms

    def clean_text(self, value: str) -> str:
        """Remove the object's identifying terms from free text."""
        pattern = self.identifying_terms()
        return pattern.sub("", value) if pattern is not None else value
