"""DICOM bytes written by hand, element by element, for encodings that toolkits tidy
away: sequences sent as UN, private elements without a VR, group 0002 inside a bare data
set, nesting thousands deep. Nothing here uses the project's own encoder."""

from __future__ import annotations

import contextlib
import io
import struct
from dataclasses import dataclass, field

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _even(value: bytes, pad: bytes = b" ") -> bytes:
    return value + pad if len(value) % 2 else value


def explicit(tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    """One explicit VR little endian element (``length`` overrides the real length)."""
    value = _even(value, b"\x00" if vr in ("UI", "OB", "UN") else b" ")
    size = len(value) if length is None else length
    group, element = tag >> 16, tag & 0xFFFF
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xL", group, element, vr.encode(), size) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), size) + value


def implicit(tag: int, value: bytes, length: int | None = None) -> bytes:
    """One implicit VR little endian element."""
    value = _even(value, b"\x00" if value[-1:] == b"\x00" else b" ")
    size = len(value) if length is None else length
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, size) + value


def item(body: bytes, defined: bool = True) -> bytes:
    """A sequence item (implicit and explicit items have the same header)."""
    if defined:
        return struct.pack("<HHL", 0xFFFE, 0xE000, len(body)) + body
    return (struct.pack("<HHL", 0xFFFE, 0xE000, UNDEFINED) + body
            + struct.pack("<HHL", 0xFFFE, 0xE00D, 0))


def sequence_end() -> bytes:
    return struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def un_sequence(tag: int, items: list[bytes], defined: bool = True) -> bytes:
    """A sequence sent as VR UN, with implicit VR items, as PACS forward unknown ones."""
    body = b"".join(items)
    if defined:
        return explicit(tag, "UN", body)
    return explicit(tag, "UN", body + sequence_end(), length=UNDEFINED)


@dataclass
class DataSet:
    """Elements by tag, written in ascending order; explicit or implicit VR LE."""

    explicit_vr: bool = True
    elements: dict[int, bytes] = field(default_factory=dict)

    def add(self, tag: int, vr: str, value: str | bytes) -> DataSet:
        raw = value.encode("latin-1") if isinstance(value, str) else value
        self.elements[tag] = explicit(tag, vr, raw) if self.explicit_vr else implicit(tag, raw)
        return self

    def raw(self, tag: int, encoded: bytes) -> DataSet:
        """An element encoded by the caller."""
        self.elements[tag] = encoded
        return self

    def encode(self) -> bytes:
        return b"".join(self.elements[t] for t in sorted(self.elements))


def ct(explicit_vr: bool = True, patient_name: str = "Planted^Patient",
       patient_id: str = "PLANTED-ID-1") -> tuple[DataSet, str]:
    """A minimal CT data set with the identifiers every object needs; and its SOP UID."""
    sop = generate_uid()
    ds = DataSet(explicit_vr)
    ds.add(0x00080016, "UI", CT_IMAGE_STORAGE).add(0x00080018, "UI", sop)
    ds.add(0x00080020, "DA", "20200102").add(0x00080060, "CS", "CT")
    ds.add(0x00100010, "PN", patient_name).add(0x00100020, "LO", patient_id)
    ds.add(0x0020000D, "UI", generate_uid()).add(0x0020000E, "UI", generate_uid())
    return ds, sop


def part10(dataset: bytes, sop_instance: str, transfer_syntax: str = EXPLICIT_LE,
           sop_class: str = CT_IMAGE_STORAGE, extra_meta: bytes = b"") -> bytes:
    """Preamble, DICM and a file meta group around an encoded data set."""
    body = (explicit(0x00020001, "OB", b"\x00\x01")
            + explicit(0x00020002, "UI", sop_class.encode())
            + explicit(0x00020003, "UI", sop_instance.encode())
            + explicit(0x00020010, "UI", transfer_syntax.encode())
            + explicit(0x00020012, "UI", b"1.2.3.4")
            + extra_meta)
    length = explicit(0x00020000, "UL", struct.pack("<L", len(body)))
    return b"\x00" * 128 + b"DICM" + length + body + dataset


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


def object_in_charset(charset: list[str], name: str, description: str) -> bytes:
    """A CT object (written by pydicom) whose name and descriptions are in ``charset``."""
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.StudyDescription = description
    ds.SeriesDescription = description
    ds.PrescriptionNotes = description  # UT: cleaned like the LO descriptions
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "PLANTED-ID-1"
    ds.Modality = "CT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    assert pydicom.dcmread(io.BytesIO(data)).PatientName == name  # written as intended
    return data


# Names in four character sets: Latin-1, UTF-8, and Japanese in ISO 2022 (IR 87 kanji and
# kana; IR 13 half-width katakana); each with a description that repeats the name.
CHARSET_NAMES = {
    "latin-1": (["ISO_IR 100"], "Müller^Jürgen", "Açaí energy scan by Jürgen Müller",
                "Açaí energy scan by"),
    "utf-8": (["ISO_IR 192"], "Ωρίων^Δήμητρα", "Açaí energy scan, Δήμητρα Ωρίων",
              "Açaí energy scan,"),
    "iso2022-ir87": (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう",
                     "Energy scan of 山田 太郎", "Energy scan of"),
    "iso2022-ir13": (["ISO 2022 IR 13", "ISO 2022 IR 87"], "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
                     "Scan ﾔﾏﾀﾞ ﾀﾛｳ 山田", "Scan"),
}
_CODECS = ("latin-1", "utf-8", "iso2022_jp", "shift_jis", "euc_jp", "utf-16-le", "cp932")


def encodings_of(text: str) -> set[bytes]:
    """The text in every codec that can write it (what must not survive)."""
    found = set()
    for codec in _CODECS:
        with contextlib.suppress(UnicodeEncodeError):
            found.add(text.encode(codec))
    return found


def name_parts(name: str) -> list[str]:
    """A name's components of two characters or more, every representation."""
    parts = []
    for group in name.split("="):
        parts += [p for p in group.split("^") if len(p) >= 2]
    return parts
