"""Seed inputs for the fuzzers: the test samples and synthetic objects with planted PHI.

    python -m fuzz.seeds [--out fuzz/work/seeds]

Writes one file per seed into ``--out`` (emptied first):

- every file of ``tests/data/samples`` (``*.dcm``), as it is when it is small, else shrunk
  (long sequences cut to their first items, large binary values cut short) so that the
  fuzzer's mutations stay fast;
- the same samples with the synthetic PHI of ``tests.synth.plant_phi`` planted in them;
- synthetic objects from ``tests.synth`` with planted PHI (CT in every uncompressed
  transfer syntax, an RT set, a structured report), and objects that carry the PHI in
  encodings that hide it: sequences sent as UN with implicit VR items inside, group 0002
  inside a bare data set, and a ten-level nested sequence.

Nothing here is random, so the seeds are the same on every machine.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests import synth

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "data" / "samples"
DEFAULT_OUT = Path(__file__).resolve().parent / "work" / "seeds"

SMALL = 64 * 1024  # samples up to this size are used unchanged
MAX_ITEMS = 3  # items kept per sequence when shrinking
MAX_BINARY = 256  # bytes kept of a large binary value when shrinking
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})


def _bytes_of(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=False)
    return buffer.getvalue()


def _shrink(ds: Dataset) -> None:
    """Cut long sequences and large binary values, at every depth (in place)."""
    for element in list(ds):
        if element.VR == "SQ":
            del element.value[MAX_ITEMS:]
            for item in element.value:
                _shrink(item)
        elif (
            element.VR in _BINARY_VRS
            and isinstance(element.value, bytes)
            and len(element.value) > MAX_BINARY
        ):
            element.value = element.value[:MAX_BINARY]


def _read(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, force=True)
    except Exception:
        return None


def _sample_seeds() -> Iterator[tuple[str, bytes]]:
    for path in sorted(SAMPLES.rglob("*.dcm")):
        name = path.relative_to(SAMPLES).as_posix().replace("/", "__")
        data = path.read_bytes()
        if len(data) <= SMALL:
            yield f"sample__{name}", data
        ds = _read(path)
        if ds is None or not len(ds):
            continue
        try:
            ds.decode()
        except Exception:
            continue
        if len(data) > SMALL:
            try:
                _shrink(ds)
                yield f"sample-shrunk__{name}", _bytes_of(ds)
            except Exception:
                continue
        try:
            synth.plant_phi(ds)
            yield f"sample-planted__{name}", _bytes_of(ds)
        except Exception:
            continue


def _file(ds: Dataset, transfer_syntax: str | None = None) -> bytes:
    buffer = io.BytesIO()
    synth.write(ds, buffer, transfer_syntax)
    return buffer.getvalue()


def _implicit_items(items: list[Dataset]) -> bytes:
    """Sequence items as a PACS writes a sequence it does not know: implicit VR LE items
    with defined lengths, to be sent as the value of a UN element."""
    out = b""
    for item in items:
        buffer = DicomBytesIO()
        buffer.is_little_endian = True
        buffer.is_implicit_VR = True
        write_dataset(buffer, item)
        body = buffer.getvalue()
        out += struct.pack("<HHL", 0xFFFE, 0xE000, len(body)) + body
    return out


def _un_sequences(phi: synth.PHIValues) -> Dataset:
    """A CT whose Referenced Image Sequence and Radiopharmaceutical Information Sequence
    are sent as UN (defined length, implicit VR items holding PHI)."""
    ds = synth.make_ct_series(1, rows=8, cols=8)[0]
    reference = Dataset()
    reference.ReferencedSOPClassUID = synth.CT_IMAGE_STORAGE
    reference.ReferencedSOPInstanceUID = synth.uid_for("un-seed", "referenced")
    reference.PatientName = phi.patient_name
    radiopharmaceutical = Dataset()
    radiopharmaceutical.RadiopharmaceuticalStartDateTime = phi.acquisition_datetime
    radiopharmaceutical.PatientName = phi.patient_name
    radiopharmaceutical.PatientID = phi.patient_id
    # Added as OB (pydicom would turn a UN value of a known sequence back into items), then
    # relabelled UN in the written file: see _relabel_un.
    ds[0x00081140] = DataElement(0x00081140, "OB", _implicit_items([reference]))
    ds[0x00540016] = DataElement(0x00540016, "OB", _implicit_items([radiopharmaceutical]))
    return ds


_UN_TAGS = (0x00081140, 0x00540016)


def _relabel_un(data: bytes) -> bytes:
    """Turn the explicit VR headers of the UN seed's sequences from OB into UN."""
    for tag in _UN_TAGS:
        ob = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"OB"
        data = data.replace(ob, ob[:4] + b"UN", 1)
    return data


def _bare_with_group_0002(phi: synth.PHIValues) -> bytes:
    """A bare explicit VR LE data set (no preamble, no DICM) starting with group 0002."""
    ds = synth.make_ct_series(1, rows=8, cols=8)[0]
    meta = b""
    for tag, vr, value in (
        (0x00020016, b"AE", phi.source_ae_title.encode()),
        (0x00020102, b"OB", phi.patient_name.encode()),
    ):
        if len(value) % 2:
            value += b" " if vr == b"AE" else b"\x00"
        group, number = tag >> 16, tag & 0xFFFF
        if vr == b"OB":
            meta += struct.pack("<HH2s2xL", group, number, vr, len(value)) + value
        else:
            meta += struct.pack("<HH2sH", group, number, vr, len(value)) + value
    ds.file_meta = None  # type: ignore[assignment]
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    return meta + buffer.getvalue()


def _nested(phi: synth.PHIValues, depth: int = 10) -> Dataset:
    ds = synth.make_ct_series(1, rows=8, cols=8)[0]
    inner = Dataset()
    inner.PatientName = phi.patient_name
    inner.PatientID = phi.patient_id
    for _ in range(depth):
        outer = Dataset()
        outer.ReferencedSOPClassUID = synth.CT_IMAGE_STORAGE
        outer.ReferencedSOPInstanceUID = synth.uid_for("nested", id(inner))
        outer.ReferencedImageSequence = [inner]
        inner = outer
    ds.ReferencedImageSequence = [inner]
    return ds


def _synthetic_seeds() -> Iterator[tuple[str, bytes]]:
    for syntax in synth.SUPPORTED_TRANSFER_SYNTAXES:
        ct = synth.make_ct_series(1, rows=8, cols=8)[0]
        synth.plant_phi(ct)
        yield f"synth__ct_{syntax}.dcm", _file(ct, syntax)
    rt = synth.make_rt_set(n_ct=1, n_rois=2, n_beams=1, rows=8, cols=8, patient_index=1)
    for kind, ds in (("rtstruct", rt.rtstruct), ("rtplan", rt.rtplan), ("rtdose", rt.rtdose)):
        yield f"synth__{kind}.dcm", _file(ds)
    yield "synth__sr.dcm", _file(synth.make_sr(patient_index=2))
    yield "synth__un_sequences.dcm", _relabel_un(_file(_un_sequences(synth.PHI)))
    yield "synth__un_sequences_implicit.dcm", _file(_un_sequences(synth.PHI),
                                                    ImplicitVRLittleEndian)
    yield "synth__bare_group_0002.dcm", _bare_with_group_0002(synth.PHI)
    yield "synth__nested.dcm", _file(_nested(synth.PHI), ExplicitVRLittleEndian)


def seeds() -> Iterator[tuple[str, bytes]]:
    """Every seed as (file name, bytes)."""
    yield from _synthetic_seeds()
    yield from _sample_seeds()


def planted_strings() -> list[bytes]:
    """Values planted in the synthetic seeds that must never reach an output: the PHI of
    the synthetic patients, and the root of every original synthetic UID."""
    found: dict[bytes, None] = {}
    for patient in range(4):
        for value in synth.phi_for(patient).strings():
            found.setdefault(value, None)
    found.setdefault(synth.UID_ROOT.encode("ascii") + b"2.", None)
    return list(found)


def write_seeds(out: Path) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    count = 0
    seen: set[bytes] = set()
    for name, data in seeds():
        digest = hashlib.sha256(data).digest()
        if digest in seen:
            continue
        seen.add(digest)
        (out / name).write_bytes(data)
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.seeds", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    count = write_seeds(args.out)
    print(f"{count} seeds in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
