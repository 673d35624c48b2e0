"""What the exporter needs to know of a stored object before sending it: its SOP class and
transfer syntax, read from the PS3.10 file meta information only.

The data set itself is never decoded (pynetdicom sends it as stored), so reading these two
values must cost no more than a small read at the start of the file. The names of SOP
classes, transfer syntaxes and C-STORE statuses are for operators' messages; none of them
is PHI.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pydicom.uid import UID

PREAMBLE = 128
MAGIC = b"DICM"
# Group 0002 elements with a 4-byte length in explicit VR (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}
_MEDIA_SOP_CLASS = 0x00020002
_TRANSFER_SYNTAX = 0x00020010
_FIRST_READ = 2048


class NotPart10(ValueError):
    """The stored object has no readable file meta information."""


def read_meta(path: Path) -> tuple[str, str]:
    """(SOP class UID, transfer syntax UID) from the file meta of the file at ``path``;
    NotPart10 when it has none or either value is missing."""
    with open(path, "rb") as handle:
        head = handle.read(_FIRST_READ)
        if len(head) < PREAMBLE + 4 + 12 or head[PREAMBLE:PREAMBLE + 4] != MAGIC:
            raise NotPart10("the stored object is not a DICOM file (no file meta information)")
        # (0002,0000) File Meta Information Group Length says how far the group goes.
        tag, vr, length = _header(head, PREAMBLE + 4)
        if tag == 0x00020000 and vr == b"UL" and length == 4:
            (group_length,) = struct.unpack_from("<I", head, PREAMBLE + 4 + 8)
            end = PREAMBLE + 4 + 12 + group_length
            if end > len(head):
                head += handle.read(end - len(head))
    values = _group_two(head)
    sop_class = values.get(_MEDIA_SOP_CLASS, "")
    syntax = values.get(_TRANSFER_SYNTAX, "")
    if not sop_class or not syntax:
        raise NotPart10("the stored object's file meta information lacks its SOP class or "
                        "transfer syntax")
    return sop_class, syntax


def _header(data: bytes, pos: int) -> tuple[int, bytes, int]:
    group, element = struct.unpack_from("<HH", data, pos)
    vr = data[pos + 4:pos + 6]
    if vr in _LONG_VRS:
        (length,) = struct.unpack_from("<I", data, pos + 8)
    else:
        (length,) = struct.unpack_from("<H", data, pos + 6)
    return (group << 16) | element, vr, length


def _group_two(data: bytes) -> dict[int, str]:
    """The UI values of group 0002 (explicit VR little endian, as PS3.10 requires)."""
    values: dict[int, str] = {}
    pos = PREAMBLE + 4
    while pos + 8 <= len(data):
        tag, vr, length = _header(data, pos)
        if tag >> 16 != 0x0002:
            break
        start = pos + (12 if vr in _LONG_VRS else 8)
        if length == 0xFFFFFFFF or start + length > len(data):
            break
        if vr == b"UI":
            values[tag] = data[start:start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    return values


def uid_name(uid: str) -> str:
    """The registered name of a SOP class or transfer syntax (e.g. ``CT Image Storage``),
    or the UID itself when it is not a registered one."""
    name = UID(uid).name
    return name if name and name != uid else uid


# C-STORE statuses (PS3.4 B.2.3, PS3.7 C), in the words of an operator's message.
_STATUS_MEANINGS: tuple[tuple[int, int, str], ...] = (
    (0x0117, 0x0117, "invalid SOP instance"),
    (0x0122, 0x0122, "SOP class not supported"),
    (0x0124, 0x0124, "not authorised"),
    (0x0210, 0x0210, "duplicate invocation"),
    (0x0211, 0x0211, "unrecognised operation"),
    (0x0212, 0x0212, "mistyped argument"),
    (0xA700, 0xA7FF, "out of resources"),
    (0xA900, 0xA9FF, "data set does not match SOP class"),
    (0xB000, 0xB000, "coercion of data elements"),
    (0xB006, 0xB006, "elements discarded"),
    (0xB007, 0xB007, "data set does not match SOP class"),
    (0xC000, 0xCFFF, "cannot understand"),
)


def status_meaning(code: int) -> str:
    """What a C-STORE status code means, in a few words."""
    for low, high, meaning in _STATUS_MEANINGS:
        if low <= code <= high:
            return meaning
    if 0xB000 <= code <= 0xBFFF or code == 0x0001:
        return "warning"
    return "failure"


def is_warning(code: int) -> bool:
    """A status under which the destination stored the object (PS3.7 C.4: warnings)."""
    return code == 0x0001 or 0xB000 <= code <= 0xBFFF


def is_out_of_resources(code: int) -> bool:
    """A temporary refusal: worth sending again later."""
    return 0xA700 <= code <= 0xA7FF
