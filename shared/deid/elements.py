"""Naming elements the way site scripts do, and reading their values.

Scripts written for RSNA's CTP name elements by DICOM keyword (``PatientID``), by the
dcm4che spelling CTP uses (``DeIdentificationMethodCodeSeq``, ``AcquisitionDatetime``;
table in ``data/ctp_element_names.csv``, taken from the ``n`` attributes of RSNA's
anonymizer script), by tag (``[0010,0020]``, ``(0010,0020)``, ``00100020``), a private
element by group, creator and element byte (``0009[QUILLON PRIVATE]10``), and an element
inside a sequence by a path (``ReferencedStudySequence::ReferencedSOPInstanceUID``: the
first item at each level).
"""

from __future__ import annotations

import csv
import re
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydicom.charset import decode_bytes
from pydicom.datadict import tag_for_keyword

from shared.dicom import charset
from shared.dicom.parse import UNDEFINED_LENGTH, DicomObject, Element, Item
from shared.dicom.values import holds_control_bytes

_NAMES = Path(__file__).with_name("data") / "ctp_element_names.csv"
_TAG_FORMS = (
    re.compile(r"^\[([0-9A-Fa-f]{4}),\s*([0-9A-Fa-f]{4})\]$"),
    re.compile(r"^\(([0-9A-Fa-f]{4}),\s*([0-9A-Fa-f]{4})\)$"),
    re.compile(r"^([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})$"),
    re.compile(r"^([0-9A-Fa-f]{4})([0-9A-Fa-f]{4})$"),
)
_PRIVATE = re.compile(r"^[\[(]?([0-9A-Fa-f]{4}),?\[([^\]]+)\]([0-9A-Fa-f]{2})[\])]?$")
_NUMERIC = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q",
            "SV": "q", "AT": "HH"}


class UnknownElement(ValueError):
    """A name that is neither a keyword, a CTP element name nor a tag form."""


@dataclass(frozen=True, slots=True)
class Step:
    """One level of an element path: a standard tag, or a private element by creator."""

    tag: int  # for a private element: group << 16 | element byte (block unknown)
    creator: str | None = None


@dataclass(frozen=True, slots=True)
class ElementRef:
    """A parsed element name; ``text`` is what the script said."""

    text: str
    steps: tuple[Step, ...]

    @property
    def tag(self) -> int | None:
        """The tag of a plain standard element (no path, not private)."""
        if len(self.steps) == 1 and self.steps[0].creator is None:
            return self.steps[0].tag
        return None


@cache
def ctp_names() -> dict[str, int]:
    with _NAMES.open(newline="", encoding="utf-8") as handle:
        return {row["ctp_name"]: int(row["tag"], 16) for row in csv.DictReader(handle)}


def _step(text: str) -> Step:
    text = text.strip()
    for form in _TAG_FORMS:
        match = form.match(text)
        if match:
            return Step(int(match[1] + match[2], 16))
    match = _PRIVATE.match(text)
    if match:
        return Step((int(match[1], 16) << 16) | int(match[3], 16), match[2].strip())
    tag = tag_for_keyword(text)
    if tag is None:
        tag = ctp_names().get(text)
    if tag is None:
        raise UnknownElement(f"unknown element name {text!r}")
    return Step(int(tag))


@cache
def element_ref(text: str) -> ElementRef:
    """Parse an element name; raises :class:`UnknownElement`."""
    parts = [p for p in text.strip().split("::")]
    if not all(p.strip() for p in parts):
        raise UnknownElement(f"empty element name in {text!r}")
    return ElementRef(text.strip(), tuple(_step(p) for p in parts))


def _private_tag(item: Item, obj: DicomObject, step: Step) -> int | None:
    group = step.tag >> 16
    for block in range(0x10, 0x100):
        creator = item.elements.get((group << 16) | block)
        if creator is not None and obj.text(creator).strip() == step.creator:
            return (group << 16) | (block << 8) | (step.tag & 0xFF)
    return None


def find(obj: DicomObject, ref: ElementRef, item: Item | None = None) -> Element | None:
    """The element a reference names (from ``item``, default the top level), or None."""
    current = item or obj.dataset
    element: Element | None = None
    for depth, step in enumerate(ref.steps):
        tag = step.tag if step.creator is None else _private_tag(current, obj, step)
        element = current.elements.get(tag) if tag is not None else None
        if element is None:
            return None
        if depth < len(ref.steps) - 1:
            if not element.items:
                return None
            current = element.items[0]
    return element


def encodings(obj: DicomObject) -> list[str]:
    """Python codecs for the object's Specific Character Set (default repertoire; a value
    that names no known character set is read byte for byte)."""
    return list(charset.encodings_for(obj.get_text(charset.SPECIFIC_CHARACTER_SET)))


def value(obj: DicomObject, element: Element | None, charsets: list[str] | None = None) -> str:
    """An element's value as text, as scripts see it: strings decoded with the object's
    character set and trailing padding removed; numbers in decimal; values joined by
    backslash; '' for a missing element, a sequence or bulk data."""
    if element is None or element.items is not None or element.length == UNDEFINED_LENGTH:
        return ""
    if element.opaque:
        return ""
    vr = element.vr
    raw = obj.raw(element)
    if vr not in _NUMERIC and holds_control_bytes(raw, 0, len(raw)):
        return ""  # not text: a script must not carry on what a wrong length swallowed
    code = _NUMERIC.get(vr)
    if code is not None:
        prefix = obj.syntax.prefix
        size = struct.calcsize(code)
        if vr == "AT":
            pairs = struct.iter_unpack(prefix + code, raw[: len(raw) - len(raw) % size])
            return "\\".join(f"({g:04X},{e:04X})" for g, e in pairs)
        numbers = struct.iter_unpack(prefix + code, raw[: len(raw) - len(raw) % size])
        return "\\".join(format(n[0], "g") if vr in ("FL", "FD") else str(n[0]) for n in numbers)
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return ""
    if vr in ("PN", "SH", "LO", "ST", "LT", "UT", "UC"):
        text = decode_bytes(raw, charsets or encodings(obj), {0x5C, 0x3D, 0x5E})
    else:
        text = raw.decode("latin-1")
    return text.rstrip(" \x00")
