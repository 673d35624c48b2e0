"""DICOM objects written byte by byte, for the cases pydicom cannot write."""

from __future__ import annotations

import struct

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def _ui(group: int, element: int, uid: str) -> bytes:
    value = uid.encode() + (b"\0" if len(uid) % 2 else b"")
    return struct.pack("<HH2sH", group, element, b"UI", len(value)) + value


def nested_file(depth: int) -> bytes:
    """A CT Image object (PS3.10 file) whose Content Sequence nests ``depth`` levels deep,
    written by hand (undefined-length sequences and items): pydicom recurses into it and
    fails on a few hundred levels, so it cannot write it either."""
    instance = str(generate_uid())
    meta = _ui(0x0002, 0x0002, CTImageStorage) + _ui(0x0002, 0x0003, instance) + _ui(
        0x0002, 0x0010, ExplicitVRLittleEndian)
    group_length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(meta))
    flat = (_ui(0x0008, 0x0016, CTImageStorage) + _ui(0x0008, 0x0018, instance)
            + _ui(0x0020, 0x000D, str(generate_uid())) + _ui(0x0020, 0x000E, str(generate_uid())))
    sequence = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff"
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    item_end = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    sequence_end = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    nested = (sequence + item) * depth + (item_end + sequence_end) * depth
    return b"\0" * 128 + b"DICM" + group_length + meta + flat + nested
