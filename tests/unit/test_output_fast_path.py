"""The file path of ``anon deidentify`` (inputs mapped, outputs written as pieces, large
spans copied in the kernel) writes exactly the bytes of the in-memory path (the input
read whole, the pieces joined), and refuses exactly the same inputs with the same reasons.

Inputs: every sample file, and synthetic objects in every encoding the reader handles
(implicit VR, big endian, deflated, encapsulated pixel data, odd lengths, bare data sets,
UN sequences, trailing padding, truncated and broken files).
"""

from __future__ import annotations

import errno
import io
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from shared.batch.fileio import InputFile, open_input, write_atomically
from shared.deid.configured import load_rules
from shared.deid.context import Pseudonyms
from shared.deid.engine import Deidentified, Engine
from shared.deid.options import ProfileOptions
from shared.dicom import output
from shared.dicom.errors import RejectedObject
from shared.dicom.output import Encoded, SourceChanged, Span
from tests import handmade, synth
from tests.conftest import SAMPLES

PSEUDONYMS = Pseudonyms("SITE-000001", "SITE-000001", -12, "ACC-1")
ENGINE = Engine(load_rules(ProfileOptions.ricord(), "SITE", None, "auto", None), b"k" * 32)


def _pydicom_bytes(ds: pydicom.Dataset, syntax: str | None = None) -> bytes:
    buffer = io.BytesIO()
    synth.write(ds, buffer, syntax)
    return buffer.getvalue()


def _deflated(ds: pydicom.Dataset) -> bytes:
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _with_trailing_padding(data: bytes) -> bytes:
    """Data Set Trailing Padding (FFFC,FFFC) after the pixel data."""
    return data + handmade.explicit(0xFFFCFFFC, "OB", b"\x00" * 300)


def _odd_lengths() -> bytes:
    ds, sop = handmade.ct()
    ds.raw(0x00081030, struct.pack("<HH2sH", 0x0008, 0x1030, b"LO", 5) + b"Study")
    ds.raw(0x7FE00010, struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OB", 300_001)
           + b"\x01" * 300_001)
    return handmade.part10(ds.encode(), sop)


def _un_sequences(defined: bool) -> bytes:
    ds, sop = handmade.ct()
    inner = handmade.implicit(0x00081150, b"1.2.840.10008.5.1.4.1.1.2\x00") + handmade.implicit(
        0x00081155, b"1.2.3.4.5.6\x00")
    ds.raw(0x00081140, handmade.un_sequence(0x00081140, [handmade.item(inner)], defined))
    ds.raw(0x7FE00010, handmade.explicit(0x7FE00010, "OW", b"\x02\x01" * 200_000))
    return handmade.part10(ds.encode(), sop)


def _bare(explicit_vr: bool) -> bytes:
    ds, _ = handmade.ct(explicit_vr)
    pixels = b"\x03\x04" * 150_000
    ds.raw(0x7FE00010, handmade.explicit(0x7FE00010, "OW", pixels) if explicit_vr
           else handmade.implicit(0x7FE00010, pixels))
    return ds.encode()


def _ct(syntax: str, size: int = 512) -> bytes:
    return _pydicom_bytes(synth.make_ct_series(1, rows=size, cols=size, transfer_syntax=syntax)[0])


def synthetic_inputs() -> dict[str, Callable[[], bytes]]:
    """Synthetic inputs by name (made on demand: some are half a megabyte)."""
    rt = synth.make_rt_set(n_ct=1, n_rois=2, n_beams=1)
    inputs: dict[str, Callable[[], bytes]] = {
        f"ct-{syntax.name}": (lambda s=syntax: _ct(s))
        for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
    }
    inputs.update({
        "ct-deflated": lambda: _deflated(synth.make_ct_series(1, rows=128, cols=128)[0]),
        "ct-small": lambda: _ct(ExplicitVRLittleEndian, 64),
        "ct-trailing-padding": lambda: _with_trailing_padding(_ct(ExplicitVRLittleEndian)),
        "ct-truncated-pixels": lambda: _ct(ExplicitVRLittleEndian)[:-1000],
        "ct-garbage-after": lambda: _ct(ExplicitVRLittleEndian) + b"\x07" * 5,
        "odd-lengths": _odd_lengths,
        "un-sequence-defined": lambda: _un_sequences(True),
        "un-sequence-undefined": lambda: _un_sequences(False),
        "bare-explicit": lambda: _bare(True),
        "bare-implicit": lambda: _bare(False),
        "nested": lambda: handmade.nested_file(20),
        "charset": lambda: handmade.object_in_charset(["ISO_IR 192"], "Müller^Jürgen",
                                                     "Planted Description"),
        "rtstruct": lambda: _pydicom_bytes(rt.rtstruct),
        "rtplan": lambda: _pydicom_bytes(rt.rtplan),
        "rtdose": lambda: _pydicom_bytes(rt.rtdose),
        "sr": lambda: _pydicom_bytes(synth.make_sr()),
        "empty": lambda: b"",
    })
    return inputs


SAMPLE_FILES = sorted(p for p in SAMPLES.rglob("*") if p.is_file() and p.suffix != ".md")
SYNTHETIC = synthetic_inputs()


def _in_memory(data: bytes) -> bytes | str:
    """The in-memory path: the output bytes, or the refusal as code and reason."""
    try:
        return ENGINE.deidentify(ENGINE.read(data), PSEUDONYMS).data
    except RejectedObject as exc:
        return f"{exc.code}: {exc.reason}"


def _through_file(source: Path, out: Path, map_bytes: int) -> bytes | str:
    """The file path, as the batch worker runs it (every span copied in the kernel)."""
    input_file = open_input(source, map_bytes)
    try:
        try:
            result = ENGINE.deidentify(ENGINE.read(input_file.buffer), PSEUDONYMS)
        except RejectedObject as exc:
            return f"{exc.code}: {exc.reason}"
        _write(result, input_file, out)
    finally:
        input_file.close()
    return out.read_bytes()


def _write(result: Deidentified, input_file: InputFile, out: Path) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        from_file = input_file.mapped and result.encoded.source is input_file.buffer
        result.encoded.write(fd, input_file.fd if from_file else None, kernel_copy_bytes=0)
    finally:
        os.close(fd)


def _check_same(source: Path, tmp_path: Path) -> None:
    expected = _in_memory(source.read_bytes())
    for map_bytes in (0, 1 << 62):  # every input mapped; none
        assert _through_file(source, tmp_path / "out.dcm", map_bytes) == expected


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: str(p.relative_to(SAMPLES)))
def test_sample_files_give_the_same_bytes(path: Path, tmp_path: Path) -> None:
    _check_same(path, tmp_path)


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_objects_give_the_same_bytes(name: str, tmp_path: Path) -> None:
    source = tmp_path / f"{name}.dcm"
    source.write_bytes(SYNTHETIC[name]())
    _check_same(source, tmp_path)


def test_large_inputs_are_mapped_and_their_pixels_copied_as_spans(tmp_path: Path) -> None:
    source = tmp_path / "ct.dcm"
    source.write_bytes(_ct(ExplicitVRLittleEndian))
    input_file = open_input(source)
    try:
        assert input_file.mapped
        result = ENGINE.deidentify(ENGINE.read(input_file.buffer), PSEUDONYMS)
        spans = [p for p in result.encoded.pieces if isinstance(p, Span)]
        assert max(s.end - s.start for s in spans) >= 512 * 512 * 2
        write_atomically(tmp_path / "out.dcm", result.encoded, input_file.fd)
    finally:
        input_file.close()
    assert (tmp_path / "out.dcm").read_bytes() == _in_memory(source.read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.dcm", "out.dcm"]


@pytest.mark.parametrize("refused", [(), ("copy_file_range",), ("copy_file_range", "sendfile")])
def test_copies_fall_back_when_the_kernel_refuses(
    refused: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where copy_file_range (or sendfile too) is refused (EXDEV, EOPNOTSUPP: no real file
    system here refuses both), the next way copies the same bytes."""
    calls: list[str] = []
    for name in ("copy_file_range", "sendfile"):
        real = getattr(os, name)

        def refusing(*args: int, name: str = name, real: Callable[..., int] = real) -> int:
            calls.append(name)
            if name in refused:
                raise OSError(errno.EXDEV if name == "copy_file_range" else errno.EOPNOTSUPP,
                              "refused")
            return real(*args)

        monkeypatch.setattr(os, name, refusing)
    source = tmp_path / "in.bin"
    source.write_bytes(bytes(range(256)) * 4096)
    encoded = Encoded(source.read_bytes(), [b"head", Span(1000, 900_000), b"tail"])
    with source.open("rb") as inp, (tmp_path / "out.bin").open("wb") as out:
        encoded.write(out.fileno(), inp.fileno())
    assert (tmp_path / "out.bin").read_bytes() == encoded.tobytes()
    assert calls[0] == "copy_file_range"
    assert ("sendfile" in calls) == ("copy_file_range" in refused)


def test_an_input_cut_short_after_parsing_is_not_written(tmp_path: Path) -> None:
    source = tmp_path / "ct.dcm"
    source.write_bytes(_ct(ExplicitVRLittleEndian))
    input_file = open_input(source)
    try:
        assert input_file.mapped
        result = ENGINE.deidentify(ENGINE.read(input_file.buffer), PSEUDONYMS)
        os.truncate(source, 100_000)
        with pytest.raises(SourceChanged):
            write_atomically(tmp_path / "out" / "x.dcm", result.encoded, input_file.fd)
    finally:
        input_file.close()
    assert list((tmp_path / "out").iterdir()) == []  # no output, no temporary left


def test_writes_more_buffers_than_one_writev_takes(tmp_path: Path) -> None:
    pieces: list[output.Piece] = [bytes([i % 256]) * 3 for i in range(3000)]
    encoded = Encoded(b"", pieces)
    with (tmp_path / "out.bin").open("wb") as out:
        encoded.write(out.fileno())
    assert (tmp_path / "out.bin").read_bytes() == b"".join(p for p in pieces
                                                           if isinstance(p, bytes))


def test_an_identical_output_in_place_is_left_untouched(tmp_path: Path) -> None:
    source = tmp_path / "ct.dcm"
    source.write_bytes(_ct(ExplicitVRLittleEndian))
    target = tmp_path / "out.dcm"
    input_file = open_input(source)
    try:
        result = ENGINE.deidentify(ENGINE.read(input_file.buffer), PSEUDONYMS)
        write_atomically(target, result.encoded, input_file.fd)
        before = target.stat()
        write_atomically(target, result.encoded, input_file.fd)
        assert target.stat().st_ino == before.st_ino
        changed = bytearray(target.read_bytes())
        changed[-1] ^= 1
        target.write_bytes(bytes(changed))
        write_atomically(target, result.encoded, input_file.fd)
    finally:
        input_file.close()
    assert target.read_bytes() == _in_memory(source.read_bytes())


def test_a_link_in_place_of_the_temporary_file_is_replaced_not_written_through(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    target = tmp_path / "out" / "x.dcm"
    target.parent.mkdir()
    (target.parent / f".x.dcm.{os.getpid()}.tmp").symlink_to(victim)
    encoded = Encoded(b"0123456789", [b"head", Span(2, 8)])
    write_atomically(target, encoded)
    assert victim.read_bytes() == b"untouched"
    assert target.read_bytes() == b"head234567"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.dcm"]
