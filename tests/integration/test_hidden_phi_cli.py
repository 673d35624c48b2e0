"""``anon deidentify`` on hand-made objects that hide PHI in unusual encodings, that carry
burned-in annotation, or that would cost far more memory than their size."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from shared.dicom.parse import set_default_limits
from tests import handmade
from tests.handmade import explicit, implicit, item, un_sequence
from tests.helpers import dcmdump_errors, deidentify, outputs, read, rejected

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_limits() -> Iterator[None]:
    """Limits are read from the environment once per process: read them again."""
    set_default_limits(None)
    yield
    set_default_limits(None)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_un_sequences_leave_nothing_in_what_the_command_writes(
    tmp_path: Path, index_env: str
) -> None:
    ds, sop = handmade.ct()
    nested = item(implicit(0x00081155, b"1.2.826.0.1.3680043.8.498.77")
                  + implicit(0x00100010, b"Nested^Planted"))
    ds.raw(0x00081140, un_sequence(0x00081140, [nested]))
    radio = item(implicit(0x00080022, b"20190412") + implicit(0x00100010, b"Nested^Planted"))
    ds.raw(0x00540016, un_sequence(0x00540016, [radio]))
    _write(tmp_path / "in" / "un.dcm", handmade.part10(ds.encode(), sop))
    assert deidentify([tmp_path / "in"], tmp_path / "out", tmp_path / "data") == 0
    [written] = outputs(tmp_path / "out")
    data = written.read_bytes()
    for planted in (b"Planted", b"1.2.826.0.1.3680043.8.498.77", b"20190412", sop.encode()):
        assert planted not in data
    assert read(written).PatientIdentityRemoved == "YES"
    assert dcmdump_errors(written) == ""


def _burned_in(flag: int = 0x00280301, un: bool = False) -> tuple[bytes, str]:
    ds, sop = handmade.ct()
    if un:
        ds.raw(flag, explicit(flag, "UN", b"YES "))
    else:
        ds.add(flag, "CS", "YES")
    return handmade.part10(ds.encode(), sop), sop


def _accepted_flags(database_url: str) -> list[bool]:
    async def fetch() -> list[bool]:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch(
                "SELECT burned_in_annotation_accepted FROM instance ORDER BY id")
        finally:
            await connection.close()
        return [bool(r[0]) for r in rows]

    return asyncio.run(fetch())


def test_burned_in_annotation_is_quarantined_with_the_reason_by_default(
    tmp_path: Path, index_env: str
) -> None:
    source = tmp_path / "in"
    _write(source / "burned.dcm", _burned_in()[0])
    _write(source / "burned_un.dcm", _burned_in(un=True)[0])  # the flag itself sent as UN
    _write(source / "face.dcm", _burned_in(0x00280302)[0])
    assert deidentify([source], tmp_path / "out", tmp_path / "data") == 0
    assert outputs(tmp_path / "out") == []
    reasons = {Path(r["source"]).name: r for r in rejected(tmp_path / "data")}
    assert set(reasons) == {"burned.dcm", "burned_un.dcm", "face.dcm"}
    assert {r["reason_code"] for r in reasons.values()} == {"burned-in-annotation"}
    assert "Burned In Annotation is YES" in reasons["burned.dcm"]["reason"]
    assert "Recognizable Visual Features" in reasons["face.dcm"]["reason"]


def test_an_operator_can_accept_burned_in_annotation_and_the_index_records_it(
    tmp_path: Path, index_env: str
) -> None:
    source = tmp_path / "in"
    _write(source / "burned.dcm", _burned_in()[0])
    plain, sop = handmade.ct(patient_id="OTHER-ID")
    _write(source / "plain.dcm", handmade.part10(plain.encode(), sop))
    assert deidentify([source], tmp_path / "out", tmp_path / "data",
                      "--accept-burned-in-annotation") == 0
    assert len(outputs(tmp_path / "out")) == 2
    assert sorted(_accepted_flags(index_env)) == [False, True]


def test_a_small_deflated_file_that_would_inflate_hugely_is_rejected_with_the_limit(
    tmp_path: Path, index_env: str, monkeypatch: pytest.MonkeyPatch, fresh_limits: None
) -> None:
    monkeypatch.setenv("MAX_INFLATED_BYTES", str(4 << 20))
    ds, sop = handmade.ct()
    ds.raw(0x7FE00010, explicit(0x7FE00010, "OB", b"\x00" * (64 << 20)))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(ds.encode()) + compressor.flush()
    _write(tmp_path / "in" / "bomb.dcm", handmade.part10(deflated, sop, handmade.DEFLATED_LE))
    assert deidentify([tmp_path / "in"], tmp_path / "out", tmp_path / "data",
                      "--jobs", "2") == 0
    [refused] = rejected(tmp_path / "data")
    assert refused["reason_code"] == "limit-exceeded"
    assert "MAX_INFLATED_BYTES" in refused["reason"]


@pytest.mark.parametrize("case", ["latin-1", "utf-8", "iso2022-ir87", "iso2022-ir13"])
def test_non_ascii_names_leave_no_encoding_in_the_output_and_are_indexed_as_spelled(
    tmp_path: Path, index_env: str, case: str
) -> None:
    charset, name, description, kept = handmade.CHARSET_NAMES[case]
    _write(tmp_path / "in" / "ct.dcm", handmade.object_in_charset(charset, name, description))
    assert deidentify([tmp_path / "in"], tmp_path / "out", tmp_path / "data",
                      "--clean-descriptors") == 0
    [written] = outputs(tmp_path / "out")
    data = written.read_bytes()
    for part in handmade.name_parts(name):
        for encoded in handmade.encodings_of(part):
            assert encoded not in data
    assert str(read(written).SeriesDescription).startswith(kept)
    assert dcmdump_errors(written) == ""

    async def names() -> list[str]:
        connection = await asyncpg.connect(index_env)
        try:
            return [r[0] for r in await connection.fetch(
                "SELECT original_patient_name FROM patient")]
        finally:
            await connection.close()

    assert asyncio.run(names()) == [name]
