"""What the engine knows about one object while de-identifying it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.dicom import charset
from shared.dicom.parse import UNDEFINED_LENGTH, DicomObject, Element, Item
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
    # Replacements the PHI index holds for this study, (original, replacement) pairs: the
    # UID and accession number of a study imported from another system. Wherever a rule
    # replaces an element holding one of these originals (a UI element, an Accession
    # Number), the index's replacement is written instead of what the rule computes.
    known_uids: tuple[tuple[str, str], ...] = ()
    known_accessions: tuple[tuple[str, str], ...] = ()


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
    # The pseudonyms' known UIDs and accession numbers, original -> replacement.
    known_uids: dict[str, str] = field(default_factory=dict)
    known_accessions: dict[str, str] = field(default_factory=dict)
    # The sequence items being processed, innermost last (empty at the top level).
    items: list[Item] = field(default_factory=list)
    _terms: re.Pattern[str] | None = field(default=None)
    _top_encodings: charset.Encodings | None = field(default=None)

    @classmethod
    def for_reading(cls, obj: DicomObject) -> ObjectContext:
        """A context that only reads the object's values (no pseudonyms, no UIDs)."""
        return cls(obj, Pseudonyms("", "", 0), UidMapper(b"\x00" * 32))

    def integer(self, key_type: str, key_value: str) -> int:
        """A counter value; 0 (and the key noted as missing) if not allocated yet."""
        number = self.integers.get((key_type, key_value))
        if number is None:
            self.missing_integers.add((key_type, key_value))
            return 0
        return number

    def encodings(self) -> charset.Encodings:
        """Codecs of the data set being processed: the Specific Character Set of the
        innermost item that has one, else of the object."""
        for item in reversed(self.items):
            if charset.SPECIFIC_CHARACTER_SET in item.elements:
                return self._encodings_of(item)
        return self._object_encodings()

    def _object_encodings(self) -> charset.Encodings:
        if self._top_encodings is None:
            self._top_encodings = self._encodings_of(self.obj.dataset)
        return self._top_encodings

    def _encodings_of(self, item: Item) -> charset.Encodings:
        element = item.elements.get(charset.SPECIFIC_CHARACTER_SET)
        if element is None or element.items is not None or element.length == UNDEFINED_LENGTH:
            return charset.DEFAULT
        return charset.encodings_for(self.obj.text(element))

    def text(self, element: Element) -> str:
        """An element's value as text, decoded with the character set in force ('' for a
        sequence: its bytes are items, not text)."""
        if element.items is not None or element.length == UNDEFINED_LENGTH:
            return ""
        if element.vr not in charset.TEXT_VRS:
            return self.obj.text(element)
        return charset.decode(self.obj.raw(element), element.vr, self.encodings())

    def encode(self, value: str, vr: str) -> bytes:
        """Text for an element of this data set, in the character set in force."""
        if vr not in charset.TEXT_VRS:
            return value.encode("latin-1", "replace")
        return charset.encode(value, vr, self.encodings())

    @property
    def item(self) -> Item:
        """The data set being processed: the current sequence item, or the top level."""
        return self.items[-1] if self.items else self.obj.dataset

    def identifying_terms(self) -> re.Pattern[str] | None:
        """A pattern matching the object's own identifying values (names split into
        components), used to clean free text; None when the object has none."""
        if self._terms is None:
            terms: set[str] = set()
            top = self._object_encodings()
            for tag in _IDENTIFYING_TAGS:
                element = self.obj.dataset.elements.get(tag)
                if element is None or element.items is not None or element.opaque:
                    continue
                if element.length == UNDEFINED_LENGTH:
                    continue
                value = charset.decode(self.obj.raw(element), element.vr, top)
                if not value:
                    continue
                terms.add(value.strip())  # as written, delimiters included
                for part in re.split(r"[\^=\\]", value):
                    part = part.strip()
                    # Ideographic names are often two characters long.
                    if len(part) >= 3 or (len(part) >= 2 and not part.isascii()):
                        terms.add(part)
                for group in value.split("="):
                    if "^" in group:
                        names = [n.strip() for n in group.split("^") if n.strip()]
                        terms.add(" ".join(names))
                        if len(names) >= 2:  # "Given Family", as free text writes it
                            terms.add(" ".join([*names[1:], names[0]]))
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
