"""The byte reader behind :func:`shared.dicom.parse.parse`: walks a PS3.10 file or a bare
PS3.5 data set and builds the :mod:`shared.dicom.parse` objects that index it.

Every element and item is located by offset with explicit bounds, and every length is
checked against the bytes present; any inconsistency raises a :class:`RejectedObject`
subclass. File meta is read element by element, the data set's encoding is taken from
the transfer syntax or guessed for a bare data set, and a deflated data set is inflated
within the inflated-size limit.
"""

from __future__ import annotations

import re
import struct
import zlib
from functools import cache

from pydicom.datadict import DicomDictionary  # type: ignore[attr-defined]

from shared.dicom.errors import LimitExceeded, Malformed, NotDicom, Truncated
from shared.dicom.output import Buffer
from shared.dicom.parse import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_BE,
    EXPLICIT_LE,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    FIRST_DATA_SET_GROUP,
    IMPLICIT_LE,
    IMPLICIT_VR_LITTLE_ENDIAN,
    ITEM,
    ITEM_DELIMITER,
    KNOWN_VRS,
    LONG_VRS,
    PIXEL_DATA,
    SEQUENCE_DELIMITER,
    UNDEFINED_LENGTH,
    DicomObject,
    Element,
    Item,
    Limits,
    Syntax,
    default_limits,
    dictionary_vr,
    syntax_of,
)

# VRs the profile acts on as such, and the string VRs a sender may put in their place.
_VR_DECIDES_RULE = frozenset({"DA", "DT", "UI", "PN"})
_RELABELLED = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH",
                         "ST", "TM", "UC", "UI", "UT"})
# The two bytes of an explicit VR: its name, and whether its header has a 4-byte length.
_VR_BY_BYTES = {vr.encode(): (vr, vr in LONG_VRS) for vr in KNOWN_VRS}
_STRUCTS = {f: struct.Struct(f) for f in ("<HH2sH", ">HH2sH", "<HHL", ">HHL", "<L", ">L")}

_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


@cache
def _rule_vrs() -> dict[int, str]:
    """Standard tags whose VR decides a rule (DA, DT, UI, PN) or that are sequences."""
    return {
        tag: entry[0]
        for tag, entry in DicomDictionary.items()
        if entry[0] in _VR_DECIDES_RULE or entry[0] == "SQ"
    }



class _Reader:
    """Walks elements and items with explicit bounds; raises on any inconsistency."""

    def __init__(self, buffer: Buffer, limits: Limits | None = None) -> None:
        self.buffer = buffer
        self.max_depth = (limits or default_limits()).max_nesting_depth

    def dataset(
        self, pos: int, end: int, syntax: Syntax, in_item: bool, depth: int = 0
    ) -> tuple[Item, int]:
        """Read elements from ``pos`` to ``end`` (or to an item delimiter when ``in_item``);
        ``depth`` counts the sequences around this data set."""
        if depth > self.max_depth:
            raise LimitExceeded(
                f"sequences are nested more than {self.max_depth} levels deep "
                "(MAX_NESTING_DEPTH)"
            )
        buf = self.buffer
        elements: dict[int, Element] = {}
        p = syntax.prefix
        explicit_header = _STRUCTS[p + "HH2sH"].unpack_from
        implicit_header = _STRUCTS[p + "HHL"].unpack_from
        u32 = _STRUCTS[p + "L"].unpack_from
        explicit = syntax.explicit_vr
        vr_names = _VR_BY_BYTES
        rule_vrs = _rule_vrs()
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
                named = vr_names.get(vr_bytes)
                if named is None:
                    raise Malformed(
                        f"invalid value representation in element ({group:04X},{elem:04X}) "
                        f"at byte {pos}"
                    )
                vr, long_header = named
                if long_header:
                    if pos + 12 > end:
                        raise Truncated(f"the data ends inside an element header at byte {pos}")
                    length = u32(buf, pos + 8)[0]
                    value = pos + 12
                else:
                    value = pos + 8
                relabelled = False
                known = rule_vrs.get(tag)
                if known is not None and known != vr:
                    if vr in _RELABELLED and known != "SQ":
                        # A date, UID or name sent under another string VR is still one:
                        # the rules acting by VR (shift, map, remove) must see it as such.
                        vr, relabelled = known, True
                    elif vr in ("OB", "OW") and known == "SQ":
                        vr = "UN"  # a sequence sent as bytes: read as UN is (items or not)
            else:
                vr = dictionary_vr(tag)
                value = pos + 8
                relabelled = False
            if tag <= last_tag:
                raise Malformed(
                    f"element ({group:04X},{elem:04X}) at byte {pos} is out of ascending order"
                )
            last_tag = tag
            element = Element(tag, vr, pos, value, length, value + length, None, None, False,
                              relabelled)
            if length == UNDEFINED_LENGTH:
                element.end = self._undefined_value(element, end, syntax, depth)
            else:
                if element.end > end:
                    raise Truncated(
                        f"element ({group:04X},{elem:04X}) announces {length} bytes at byte "
                        f"{value} but the data ends at byte {end}"
                    )
                if vr == "SQ":
                    element.item_syntax = syntax
                    element.items = self.sequence(
                        value, element.end, syntax, defined=True, depth=depth + 1
                    )[0]
                elif vr == "UN":
                    self._interpret_unknown(element, syntax, depth)
            elements[tag] = element
            pos = element.end
        if in_item:
            raise Truncated("the data ends inside a sequence item")
        return Item(elements), pos

    def _undefined_value(self, element: Element, end: int, syntax: Syntax, depth: int) -> int:
        tag = element.tag
        if element.vr == "SQ":
            element.item_syntax = syntax
        elif element.vr == "UN" or (not syntax.explicit_vr and tag != PIXEL_DATA):
            # PS3.5 6.2.2: an undefined-length UN value is a sequence in implicit VR LE; in
            # an implicit VR data set, any element of undefined length but pixel data is.
            element.item_syntax = IMPLICIT_LE if syntax.explicit_vr else syntax
            element.vr = "SQ"
        elif tag == PIXEL_DATA:
            return self._fragments(element.value, end, syntax, tag)
        else:
            raise Malformed(
                f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) with VR {element.vr} has an "
                "undefined length"
            )
        items, pos = self.sequence(
            element.value, end, element.item_syntax, defined=False, depth=depth + 1
        )
        element.items = items
        return pos

    def _interpret_unknown(self, element: Element, syntax: Syntax, depth: int) -> None:
        """Give a defined-length value of unknown VR (explicit UN, or an implicit VR tag
        missing from the data dictionary) the meaning a reader downstream would give it.

        A tag the dictionary knows takes its dictionary VR: a sequence's items are read
        (implicit VR little endian, PS3.5 6.2.2, else the data set's own encoding); an
        unknown tag whose value parses as items is a sequence; anything else is opaque.
        """
        tag = element.tag
        known = dictionary_vr(tag) if element.vr == "UN" or not syntax.explicit_vr else "UN"
        if known not in ("UN", "SQ"):
            element.vr = known
            element.relabelled = syntax.explicit_vr
            return
        start, stop = element.value, element.value + element.length
        if element.length == 0:
            if known == "SQ":
                element.vr, element.items, element.item_syntax = "SQ", [], syntax
            return
        candidates = [IMPLICIT_LE] if syntax == IMPLICIT_LE else [IMPLICIT_LE, syntax]
        for item_syntax in candidates:
            prefix = b"\xfe\xff\x00\xe0" if item_syntax.little_endian else b"\xff\xfe\xe0\x00"
            if self.buffer[start : start + 4] != prefix:
                continue
            try:
                items = self.sequence(start, stop, item_syntax, defined=True, depth=depth + 1)[0]
            except (Malformed, Truncated, struct.error):  # a deeper nesting still refuses
                continue
            element.vr, element.items, element.item_syntax = "SQ", items, item_syntax
            return
        element.opaque = True

    def sequence(
        self, pos: int, end: int, syntax: Syntax, defined: bool, depth: int = 1
    ) -> tuple[list[Item], int]:
        """Read sequence items; a delimited sequence ends at its delimiter."""
        buf = self.buffer
        header = _STRUCTS[syntax.prefix + "HHL"]
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
                item, pos = self.dataset(pos + 8, end, syntax, in_item=True, depth=depth)
            else:
                if pos + 8 + length > end:
                    raise Truncated(f"sequence item at byte {pos} runs past the end of its data")
                item, _ = self.dataset(
                    pos + 8, pos + 8 + length, syntax, in_item=False, depth=depth
                )
                pos += 8 + length
            item.start, item.end = start, pos
            items.append(item)
        if not defined:
            raise Truncated("the data ends before the end of a sequence")
        return items, pos

    def _fragments(self, pos: int, end: int, syntax: Syntax, tag: int) -> int:
        """Skip encapsulated pixel data fragments (PS3.5 A.4), checking every length."""
        header = _STRUCTS[syntax.prefix + "HHL"]
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


def read(data: Buffer, limits: Limits) -> DicomObject:
    """Index the object in ``data`` (not empty, its size already checked against
    ``limits``); group 0002 of a bare data set is set apart as file meta."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        meta_start = 132
    elif data[:4] == b"DICM":
        meta_start = 4
    elif len(data) <= 132 and data[:128].strip(b"\x00") == b"":
        raise Truncated("the file ends inside the 128-byte preamble")
    else:
        meta_start = -1
    reader = _Reader(data, limits)
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
        if not _UID.fullmatch(ts_uid):
            # Not a UID: it cannot name the encoding, nor be written into the output's
            # file meta. The data set is read as what it is.
            ts_uid = ""
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
        buffer = data[:dataset_start] + _inflate(data, dataset_start, limits)
        reader = _Reader(buffer, limits)
    try:
        dataset, _ = reader.dataset(dataset_start, len(buffer), syntax, in_item=False)
    except (struct.error, UnicodeDecodeError) as exc:
        raise Malformed(f"undecodable element structure ({exc.__class__.__name__})") from None
    if meta_start < 0:
        # A bare data set may carry file meta elements (and even command elements): they
        # describe a transfer, not the object, and never travel with the data set.
        for tag in [t for t in dataset.elements if t < FIRST_DATA_SET_GROUP]:
            meta.elements[tag] = dataset.elements.pop(tag)
    return DicomObject(buffer, meta, dataset, syntax, ts_uid, meta_start >= 0)


def _guess_bare_syntax(data: Buffer) -> Syntax:
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


def _inflate(data: Buffer, start: int, limits: Limits) -> bytes:
    """The inflated data set, refused as soon as it would exceed the inflated-size limit
    (memory is committed only up to the limit)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    cap = limits.max_inflated_bytes
    try:
        inflated = inflater.decompress(memoryview(data)[start:], cap + 1)
    except zlib.error as exc:
        raise Malformed(f"the deflated data set cannot be inflated ({exc})") from None
    if len(inflated) > cap:
        raise LimitExceeded(
            f"the deflated data set inflates to more than {cap} bytes (MAX_INFLATED_BYTES)"
        )
    return inflated


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

