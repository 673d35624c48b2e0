"""Structural reading of DICOM objects (PS3.10 files and bare PS3.5 data sets).

The reader indexes elements by offset into the original bytes instead of decoding
values: de-identification touches a few dozen elements of a file and copies the rest,
pixel data included, byte for byte. Every length is checked against the bytes present,
so truncated or inconsistent files are rejected here rather than half-processed later.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from pydicom.datadict import (  # type: ignore[attr-defined]
    DicomDictionary,
    RepeatersDictionary,
)

from shared.dicom.errors import Malformed, MissingAttribute, NotDicom, Truncated

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

_VR_NAMES = {vr.encode(): vr for vr in KNOWN_VRS}
_LONG_VR_BYTES = frozenset(vr.encode() for vr in LONG_VRS)
_STRUCTS = {f: struct.Struct(f) for f in ("<HH2sH", ">HH2sH", "<HHL", ">HHL", "<L", ">L")}

# Attributes without which an object cannot be placed in the patient/study/series/instance
# hierarchy nor have its references rewritten (SOP Common and General Study/Series modules).
REQUIRED_UIDS = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
}


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

    buffer: bytes
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


class _Reader:
    """Walks elements and items with explicit bounds; raises on any inconsistency."""

    def __init__(self, buffer: bytes) -> None:
        self.buffer = buffer

    def dataset(self, pos: int, end: int, syntax: Syntax, in_item: bool) -> tuple[Item, int]:
        """Read elements from ``pos`` to ``end`` (or to an item delimiter when ``in_item``)."""
        buf = self.buffer
        elements: dict[int, Element] = {}
        p = syntax.prefix
        explicit_header = _STRUCTS[p + "HH2sH"].unpack_from
        implicit_header = _STRUCTS[p + "HHL"].unpack_from
        u32 = _STRUCTS[p + "L"].unpack_from
        explicit = syntax.explicit_vr
        long_vrs = _LONG_VR_BYTES
        last_tag = -1
        while pos < end:
            if pos + 8 > end:
                raise Truncated(f"the data ends inside an element header at byte {pos}")
            if explicit:
                group, elem, vr_bytes, length = explicit_header(buf, pos)
            else:
                group, elem, length = implicit_header(buf, pos)
            tag = (group << 16) | elem
            if group == 0xFFFE:
                if tag == ITEM_DELIMITER and in_item:
                    return Item(elements), pos + 8
                raise Malformed(f"item tag ({group:04X},{elem:04X}) in a data set at byte {pos}")
            if explicit:
                vr = _VR_NAMES.get(vr_bytes)
                if vr is None:
                    raise Malformed(
                        f"invalid value representation in element ({group:04X},{elem:04X}) "
                        f"at byte {pos}"
                    )
                if vr_bytes in long_vrs:
                    if pos + 12 > end:
                        raise Truncated(f"the data ends inside an element header at byte {pos}")
                    length = u32(buf, pos + 8)[0]
                    value = pos + 12
                else:
                    value = pos + 8
            else:
                vr = dictionary_vr(tag)
                value = pos + 8
            if tag <= last_tag:
                raise Malformed(
                    f"element ({group:04X},{elem:04X}) at byte {pos} is out of ascending order"
                )
            last_tag = tag
            element = Element(tag, vr, pos, value, length, 0)
            if length == UNDEFINED_LENGTH:
                element.end = self._undefined_value(element, end, syntax)
            else:
                element.end = value + length
                if element.end > end:
                    raise Truncated(
                        f"element ({group:04X},{elem:04X}) announces {length} bytes at byte "
                        f"{value} but the data ends at byte {end}"
                    )
                if vr == "SQ":
                    element.item_syntax = syntax
                    element.items = self.sequence(value, element.end, syntax, defined=True)[0]
            elements[tag] = element
            pos = element.end
        if in_item:
            raise Truncated("the data ends inside a sequence item")
        return Item(elements), pos

    def _undefined_value(self, element: Element, end: int, syntax: Syntax) -> int:
        tag = element.tag
        if element.vr == "SQ":
            element.item_syntax = syntax
        elif element.vr == "UN":
            # PS3.5 6.2.2: an undefined-length UN value is a sequence in implicit VR LE
            # (in an implicit VR data set, an unknown tag with undefined length likewise).
            element.item_syntax = IMPLICIT_LE if syntax.explicit_vr else syntax
        elif tag == PIXEL_DATA:
            return self._fragments(element.value, end, syntax, tag)
        else:
            raise Malformed(
                f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) with VR {element.vr} has an "
                "undefined length"
            )
        items, pos = self.sequence(element.value, end, element.item_syntax, defined=False)
        element.items = items
        return pos

    def sequence(
        self, pos: int, end: int, syntax: Syntax, defined: bool
    ) -> tuple[list[Item], int]:
        """Read sequence items; a delimited sequence ends at its delimiter."""
        buf = self.buffer
        header = struct.Struct(syntax.prefix + "HHL")
        items: list[Item] = []
        while pos < end:
            if pos + 8 > end:
                raise Truncated(f"the data ends inside an item header at byte {pos}")
            group, elem, length = header.unpack_from(buf, pos)
            tag = (group << 16) | elem
            if tag == SEQUENCE_DELIMITER:
                if defined:
                    raise Malformed(f"sequence delimiter in a defined-length sequence at {pos}")
                return items, pos + 8
            if tag != ITEM:
                raise Malformed(f"expected a sequence item at byte {pos}")
            start = pos
            if length == UNDEFINED_LENGTH:
                item, pos = self.dataset(pos + 8, end, syntax, in_item=True)
            else:
                if pos + 8 + length > end:
                    raise Truncated(f"sequence item at byte {pos} runs past the end of its data")
                item, _ = self.dataset(pos + 8, pos + 8 + length, syntax, in_item=False)
                pos += 8 + length
            item.start, item.end = start, pos
            items.append(item)
        if not defined:
            raise Truncated("the data ends before the end of a sequence")
        return items, pos

    def _fragments(self, pos: int, end: int, syntax: Syntax, tag: int) -> int:
        """Skip encapsulated pixel data fragments (PS3.5 A.4), checking every length."""
        header = struct.Struct(syntax.prefix + "HHL")
        buf = self.buffer
        while pos + 8 <= end:
            group, elem, length = header.unpack_from(buf, pos)
            item_tag = (group << 16) | elem
            if item_tag == SEQUENCE_DELIMITER:
                return pos + 8
            if item_tag != ITEM or length == UNDEFINED_LENGTH:
                raise Malformed(f"invalid encapsulated pixel data fragment at byte {pos}")
            pos += 8 + length
            if pos > end:
                raise Truncated("encapsulated pixel data is truncated")
        raise Truncated("encapsulated pixel data ends without its sequence delimiter")


def _guess_bare_syntax(data: bytes) -> Syntax:
    """The encoding of a data set stored without file meta (PS3.5 Annex A heuristics)."""
    if len(data) < 8:
        raise NotDicom("too short to hold a DICOM element")
    group_le = struct.unpack_from("<H", data, 0)[0]
    group_be = struct.unpack_from(">H", data, 0)[0]
    vr = data[4:6]
    explicit = vr.isalpha() and vr.isupper() and vr.decode("latin-1") in KNOWN_VRS
    if group_be < group_le and group_be in (0x0008, 0x0002) and explicit:
        return EXPLICIT_BE
    if group_le not in (0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028):
        raise NotDicom("neither a DICOM Part 10 file (no DICM prefix) nor a DICOM data set")
    return EXPLICIT_LE if explicit else IMPLICIT_LE


def _syntax_uid(syntax: Syntax) -> str:
    if not syntax.explicit_vr:
        return IMPLICIT_VR_LITTLE_ENDIAN
    return EXPLICIT_VR_LITTLE_ENDIAN if syntax.little_endian else EXPLICIT_VR_BIG_ENDIAN


def parse(data: bytes, require_uids: bool = True) -> DicomObject:
    """Index a DICOM object. Raises a :class:`RejectedObject` subclass saying what is wrong.

    Accepts PS3.10 files (preamble, ``DICM``, file meta) and bare data sets without file
    meta, in any transfer syntax (deflated data sets are inflated; encapsulated pixel
    data is walked, never decoded).
    """
    if not data:
        raise NotDicom("the file is empty")
    if len(data) >= 132 and data[128:132] == b"DICM":
        meta_start = 132
    elif data[:4] == b"DICM":
        meta_start = 4
    elif len(data) <= 132 and data[:128].strip(b"\x00") == b"":
        raise Truncated("the file ends inside the 128-byte preamble")
    else:
        meta_start = -1
    reader = _Reader(data)
    meta = Item()
    if meta_start >= 0:
        pos = meta_start
        # Read group 0002 element by element rather than trusting (0002,0000): a wrong
        # group length is common and harmless once the meta is rewritten.
        while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
            item, pos = _read_one(reader, pos, len(data))
            meta.elements.update(item.elements)
        if not meta.elements:
            raise Truncated("the file ends right after its DICM prefix")
        ts_element = meta.elements.get(0x00020010)
        ts_uid = data[ts_element.value : ts_element.value + ts_element.length].decode(
            "latin-1"
        ).rstrip(" \x00") if ts_element else ""
        dataset_start = pos
        if pos >= len(data):
            raise Truncated("the file ends after its file meta information")
        if not ts_uid:
            syntax = _guess_bare_syntax(data[pos:])
            ts_uid = _syntax_uid(syntax)
        else:
            syntax = syntax_of(ts_uid)
            vr = data[pos + 4 : pos + 6].decode("latin-1")
            deflated = ts_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
            if syntax.explicit_vr and syntax.little_endian and not deflated and vr not in KNOWN_VRS:
                # Seen in the wild: file meta announcing an explicit VR syntax in front of an
                # implicit VR data set. Read what is there, as other toolkits do.
                syntax = IMPLICIT_LE
    else:
        syntax = _guess_bare_syntax(data)
        ts_uid = _syntax_uid(syntax)
        dataset_start = 0
    buffer = data
    if ts_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        try:
            inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[dataset_start:])
        except zlib.error as exc:
            raise Malformed(f"the deflated data set cannot be inflated ({exc})") from None
        buffer = data[:dataset_start] + inflated
        reader = _Reader(buffer)
    try:
        dataset, _ = reader.dataset(dataset_start, len(buffer), syntax, in_item=False)
    except (struct.error, UnicodeDecodeError) as exc:
        raise Malformed(f"undecodable element structure ({exc.__class__.__name__})") from None
    obj = DicomObject(buffer, meta, dataset, syntax, ts_uid, meta_start >= 0)
    if not dataset.elements:
        raise NotDicom("the file holds no data set")
    if require_uids:
        check_required_uids(obj)
    return obj


def _read_one(reader: _Reader, pos: int, end: int) -> tuple[Item, int]:
    """Read one explicit VR little endian element (file meta is always so encoded)."""
    data = reader.buffer
    vr = data[pos + 4 : pos + 6].decode("latin-1")
    if vr not in KNOWN_VRS:
        raise Malformed(f"invalid value representation in the file meta at byte {pos}")
    header = 12 if vr in LONG_VRS else 8
    if pos + header > end:
        raise Truncated("the file ends inside the file meta information")
    length = (
        struct.unpack_from("<L", data, pos + 8)[0]
        if header == 12
        else struct.unpack_from("<H", data, pos + 6)[0]
    )
    if length == UNDEFINED_LENGTH or pos + header + length > end:
        raise Truncated("the file ends inside the file meta information")
    group, number = struct.unpack_from("<HH", data, pos)
    tag = (group << 16) | number
    element = Element(tag, vr, pos, pos + header, length, pos + header + length)
    return Item({tag: element}), element.end


def check_required_uids(obj: DicomObject) -> None:
    """Reject objects that lack the UIDs placing them in the DICOM hierarchy."""
    for tag, keyword in REQUIRED_UIDS.items():
        value = obj.get_text(tag)
        if not value:
            raise MissingAttribute(f"{keyword} is missing or empty")
