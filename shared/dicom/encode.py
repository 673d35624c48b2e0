"""Encoding of replacement elements, sequences and file meta (PS3.5 7, PS3.10 7.1)."""

from __future__ import annotations

import struct
import zlib

from shared.dicom.output import Buffer, Encoded, Piece
from shared.dicom.parse import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    ITEM,
    ITEM_DELIMITER,
    KNOWN_VRS,
    LONG_VRS,
    SEQUENCE_DELIMITER,
    UNDEFINED_LENGTH,
    Syntax,
)
from shared.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

# Values of these VRs are padded with NUL to an even length, all other strings with space.
_NUL_PADDED = frozenset({"UI", "OB", "UN", "OW", "OD", "OF", "OL", "OV"})


# The packers of element headers by byte order: implicit, explicit long, explicit short.
_PACKERS = {
    prefix: (struct.Struct(prefix + "HHL").pack, struct.Struct(prefix + "HH2s2xL").pack,
             struct.Struct(prefix + "HH2sH").pack)
    for prefix in "<>"
}
_VR_BYTES = {vr: vr.encode() for vr in KNOWN_VRS}


def header(tag: int, vr: str, length: int, syntax: Syntax) -> bytes:
    """The header of an element whose value is ``length`` bytes (or undefined)."""
    implicit, explicit_long, explicit_short = _PACKERS[syntax.prefix]
    if not syntax.explicit_vr:
        return implicit(tag >> 16, tag & 0xFFFF, length)
    if vr in LONG_VRS:
        return explicit_long(tag >> 16, tag & 0xFFFF, _VR_BYTES.get(vr) or vr.encode(), length)
    if length > 0xFFFF:
        # Short-header VRs cannot carry longer values; UN can (PS3.5 6.2.2).
        return explicit_long(tag >> 16, tag & 0xFFFF, b"UN", length)
    return explicit_short(tag >> 16, tag & 0xFFFF, _VR_BYTES.get(vr) or vr.encode(), length)


def element(tag: int, vr: str, value: bytes, syntax: Syntax) -> bytes:
    """A complete element; the value is padded to even length as its VR requires."""
    if len(value) & 1:
        value += b"\x00" if vr in _NUL_PADDED else b" "
    return header(tag, vr, len(value), syntax) + value


def text_element(tag: int, vr: str, value: str, syntax: Syntax) -> bytes:
    return element(tag, vr, value.encode("utf-8" if vr in ("UT", "UC", "UR") else "latin-1",
                                         "replace"), syntax)


def sequence_start(tag: int, vr: str, syntax: Syntax) -> bytes:
    """Header of a sequence written with undefined length, so no length is precomputed."""
    return header(tag, vr, UNDEFINED_LENGTH, syntax)


# Item and sequence delimiters of each byte order (they do not depend on the VR encoding).
_MARKERS = {
    prefix: tuple(struct.pack(prefix + "HHL", tag >> 16, tag & 0xFFFF, length)
                  for tag, length in ((ITEM, UNDEFINED_LENGTH), (ITEM_DELIMITER, 0),
                                      (SEQUENCE_DELIMITER, 0)))
    for prefix in "<>"
}


def item_start(syntax: Syntax) -> bytes:
    return _MARKERS[syntax.prefix][0]


def item_end(syntax: Syntax) -> bytes:
    return _MARKERS[syntax.prefix][1]


def sequence_end(syntax: Syntax) -> bytes:
    return _MARKERS[syntax.prefix][2]


_META_SYNTAX = Syntax(True, True)


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, prefix and a fresh file meta group (PS3.10 7.1) for a written object.

    Only the elements that describe the object are written: the sending application's
    AE title and private information of the original meta are not carried over.
    """
    body = b"".join(
        (
            element(0x00020001, "OB", b"\x00\x01", _META_SYNTAX),
            element(0x00020002, "UI", sop_class_uid.encode(), _META_SYNTAX),
            element(0x00020003, "UI", sop_instance_uid.encode(), _META_SYNTAX),
            element(0x00020010, "UI", transfer_syntax_uid.encode(), _META_SYNTAX),
            element(0x00020012, "UI", IMPLEMENTATION_CLASS_UID.encode(), _META_SYNTAX),
            element(0x00020013, "SH", IMPLEMENTATION_VERSION_NAME.encode(), _META_SYNTAX),
        )
    )
    group_length = element(0x00020000, "UL", struct.pack("<L", len(body)), _META_SYNTAX)
    return b"\x00" * 128 + b"DICM" + group_length + body


def deflate(dataset: bytes) -> bytes:
    """Deflate a data set for the Deflated Explicit VR Little Endian transfer syntax."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(dataset) + compressor.flush()


def part10(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source: Buffer,
    dataset: list[Piece],
) -> Encoded:
    """A complete PS3.10 file around the pieces of a data set the engine wrote (new bytes
    and spans of ``source``), kept as pieces so that nothing large is copied to join them;
    a deflated data set is joined and deflated whole."""
    meta = file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid)
    if transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        inflated = Encoded(source, dataset).tobytes()
        return Encoded(source, [meta + deflate(inflated)])
    return Encoded(source, [meta, *dataset])
