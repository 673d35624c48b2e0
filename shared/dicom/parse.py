"""Structural reading of DICOM objects (PS3.10 files and bare PS3.5 data sets): the
objects the reader produces and :func:`parse`, its entry point.

The reader indexes elements by offset into the original bytes instead of decoding
values: de-identification touches a few dozen elements of a file and copies the rest,
pixel data included, byte for byte. Every length is checked against the bytes present,
so truncated or inconsistent files are rejected here rather than half-processed later.

This module holds what every user of a parsed object needs: the encoding constants,
:class:`Limits`, :class:`Syntax`, :class:`Element`, :class:`Item`, :class:`DicomObject`,
the data dictionary's VRs, and the checks :func:`parse` applies to a whole object. The
walk over the bytes is :mod:`shared.dicom.reader`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pydicom.datadict import (  # type: ignore[attr-defined]
    DicomDictionary,
    RepeatersDictionary,
)

from shared.dicom.errors import LimitExceeded, Malformed, MissingAttribute, NotDicom
from shared.dicom.output import Buffer
from shared.dicom.values import well_formed

UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

# PS3.5 7.1.2: VRs whose explicit header carries a 4-byte length after 2 reserved bytes.
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
KNOWN_VRS = LONG_VRS | frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL",
     "SS", "ST", "TM", "UI", "UL", "US"}
)

# Groups 0000 (command) and 0002 (file meta) describe a transfer, never the object.
FIRST_DATA_SET_GROUP = 0x00030000

# Attributes without which an object cannot be placed in the patient/study/series/instance
# hierarchy nor have its references rewritten (SOP Common and General Study/Series modules).
REQUIRED_UIDS = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What the reader accepts before it commits memory or recursion to an object.

    A small input must not cost a large amount of memory (a deflated data set that
    inflates a thousandfold) or crash the reader (sequences nested thousands deep); an
    object beyond a limit is refused with :class:`LimitExceeded` naming the limit.
    """

    max_object_bytes: int = 4 << 30
    max_inflated_bytes: int = 1 << 30
    max_nesting_depth: int = 64

    def check_size(self, size: int) -> None:
        """Refuse an object of ``size`` bytes before it is read."""
        if size > self.max_object_bytes:
            raise LimitExceeded(
                f"the object has {size} bytes, more than the largest accepted "
                f"({self.max_object_bytes} bytes, MAX_OBJECT_BYTES)"
            )


    @classmethod
    def from_environment(cls) -> Limits:
        """The limits set by ``MAX_OBJECT_BYTES``, ``MAX_INFLATED_BYTES`` and
        ``MAX_NESTING_DEPTH`` (validated with the other settings when a program starts;
        read here so that worker processes started by a program apply them too)."""
        values: dict[str, int] = {}
        for name in ("max_object_bytes", "max_inflated_bytes", "max_nesting_depth"):
            text = os.environ.get(name.upper(), "").strip()
            if text.isascii() and text.isdigit() and int(text) > 0:
                values[name] = int(text)
        return cls(**values)


_limits: Limits | None = None


def default_limits() -> Limits:
    """The limits :func:`parse` applies when none are given (from the environment)."""
    global _limits
    if _limits is None:
        _limits = Limits.from_environment()
    return _limits


def set_default_limits(limits: Limits | None) -> None:
    """Set the limits of every later :func:`parse` in this process (None: read the
    environment again)."""
    global _limits
    _limits = limits


@dataclass(frozen=True, slots=True)
class Syntax:
    """Byte order and VR encoding of a data set."""

    little_endian: bool
    explicit_vr: bool

    @property
    def prefix(self) -> str:
        return "<" if self.little_endian else ">"


IMPLICIT_LE = Syntax(True, False)
EXPLICIT_LE = Syntax(True, True)
EXPLICIT_BE = Syntax(False, True)


def syntax_of(transfer_syntax_uid: str) -> Syntax:
    """The element encoding used by a transfer syntax (encapsulated syntaxes are explicit LE)."""
    if transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN:
        return IMPLICIT_LE
    if transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN:
        return EXPLICIT_BE
    return EXPLICIT_LE


@dataclass(slots=True)
class Element:
    """One element located in ``buffer``: header at ``start``, value at ``value``."""

    tag: int
    vr: str
    start: int
    value: int
    length: int  # value length in bytes; UNDEFINED_LENGTH for delimited values
    end: int  # offset just past the element (after its delimiter, if any)
    items: list[Item] | None = None  # parsed items of a sequence
    item_syntax: Syntax | None = None  # encoding of the items (UN sequences are implicit LE)
    # The value could not be interpreted (a UN value, or an implicit VR value of an unknown
    # tag, that is neither a known VR nor items): it may hide anything, so it is removed
    # unless a rule names exactly this element.
    opaque: bool = False
    # The VR differs from the one written in the element's explicit header (a UN value of a
    # known tag, a date sent as LO...): a copy must be written with the right header.
    relabelled: bool = False


@dataclass(slots=True)
class Item:
    """A data set: the top level of an object or one item of a sequence; a sequence item
    also knows where it lies in the buffer, header and delimiter included."""

    elements: dict[int, Element] = field(default_factory=dict)
    start: int = -1
    end: int = -1


@dataclass(slots=True)
class DicomObject:
    """A parsed object: file meta elements, the data set and the bytes they point into."""

    buffer: Buffer  # the input, or (deflated) the input with its data set inflated
    meta: Item
    dataset: Item
    syntax: Syntax
    transfer_syntax_uid: str
    has_file_meta: bool

    def raw(self, element: Element) -> bytes:
        """The undecoded value bytes of an element with a defined length."""
        return self.buffer[element.value : element.value + element.length]

    def text(self, element: Element) -> str:
        """The value of a string element as ASCII-safe text, padding removed."""
        return self.raw(element).decode("latin-1").rstrip(" \x00")

    def get_text(self, tag: int, item: Item | None = None) -> str | None:
        """The value of a top-level (or ``item``) string element, None when absent."""
        element = (item or self.dataset).elements.get(tag)
        if element is None or element.items is not None or element.length == UNDEFINED_LENGTH:
            return None
        return self.text(element)


_vr_cache: dict[int, str] = {}


def dictionary_vr(tag: int) -> str:
    """The VR of a tag in an implicit VR data set (PS3.6), ``UN`` when unknown."""
    vr = _vr_cache.get(tag)
    if vr is None:
        if tag & 0x10000 and (tag & 0xFFFF) <= 0x00FF and (tag & 0xFFFF) >= 0x0010:
            vr = "LO"  # private creator
        elif (tag & 0xFFFF) == 0:
            vr = "UL"  # group length
        else:
            entry = DicomDictionary.get(tag)
            if entry is None:
                entry = _repeater_entry(tag)
            vr = entry[0][:2] if entry else "UN"
        _vr_cache[tag] = vr
    return vr


def _repeater_entry(tag: int) -> tuple[str, str, str, str, str] | None:
    group = tag >> 16
    if 0x5000 <= group <= 0x60FF and not group & 1:
        for mask, entry in RepeatersDictionary.items():
            fixed = int(mask.replace("x", "0"), 16)
            keep = int("".join("0" if c == "x" else "F" for c in mask), 16)
            if tag & keep == fixed:
                return entry
    return None


def parse(data: Buffer, require_uids: bool = True, limits: Limits | None = None) -> DicomObject:
    """Index a DICOM object. Raises a :class:`RejectedObject` subclass saying what is wrong.

    Accepts PS3.10 files (preamble, ``DICM``, file meta) and bare data sets without file
    meta, in any transfer syntax (deflated data sets are inflated; encapsulated pixel
    data is walked, never decoded). Group 0002 found inside a bare data set is set apart
    as file meta, never left in the data set. ``limits`` (default: :func:`default_limits`)
    bound the object's size, its inflated size and the nesting of its sequences.
    """
    # Imported here, not at the top: the reader builds this module's objects.
    from shared.dicom.reader import read

    limits = limits or default_limits()
    if not data:
        raise NotDicom("the file is empty")
    limits.check_size(len(data))
    obj = read(data, limits)
    if not obj.dataset.elements:
        raise NotDicom("the file holds no data set")
    if require_uids:
        check_required_uids(obj)
    return obj


# Values the PHI index keys patients and studies by (with the required UIDs).
IDENTIFYING_KEYS = {
    0x00100020: "PatientID",
    0x00100021: "IssuerOfPatientID",
    0x00100010: "PatientName",
    0x00080020: "StudyDate",
    0x00080050: "AccessionNumber",
    0x00080060: "Modality",
}


def check_required_uids(obj: DicomObject) -> None:
    """Reject objects that lack the UIDs placing them in the DICOM hierarchy, or whose
    identifying values hold a NUL byte inside (no identifier; the index cannot store it)."""
    for tag, keyword in IDENTIFYING_KEYS.items():
        value = obj.get_text(tag)
        if value and "\x00" in value:
            raise Malformed(f"{keyword} holds a NUL byte inside its value")
    for tag, keyword in REQUIRED_UIDS.items():
        value = obj.get_text(tag)
        if not value:
            raise MissingAttribute(f"{keyword} is missing or empty")
        if "\\" in value:
            raise Malformed(f"{keyword} has more than one value")
        element = obj.dataset.elements[tag]
        if len(value) > 64 or not well_formed("UI", obj.buffer, element.value,
                                              element.value + element.length):
            # Control bytes or names in a UID: most likely the elements after it swallowed
            # by a wrong length. The UID names the object everywhere: it must be one.
            raise Malformed(f"{keyword} is not a UID (not digits and dots, or too long)")
