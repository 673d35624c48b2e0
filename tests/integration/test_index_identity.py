"""What the PHI index says about patients and instances stays exact: patient keys cannot
collide, a re-processed object carries the identity of the rules that made it last, and
names are stored as their character set spells them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from shared.index.connect import open_index
from shared.index.phi_index import patient_counter_key
from tests import handmade
from tests.helpers import deidentify, outputs

pytestmark = pytest.mark.integration


def test_a_backslash_in_a_patient_id_does_not_collide_with_an_issuer() -> None:
    assert patient_counter_key(("A\\B", "")) != patient_counter_key(("A", "B"))
    assert patient_counter_key(("A", "B\\C")) != patient_counter_key(("A\\B", "C"))
    assert patient_counter_key(("A", "")) == "A"  # keys of plain IDs are unchanged
    assert patient_counter_key(("A", "B")) == "A\\B"


def test_patient_a_backslash_b_and_patient_a_of_issuer_b_are_two_patients(
    database_url: str, tmp_path: Path
) -> None:
    async def run() -> tuple[str, str]:
        opened = await open_index(None, database_url, None)
        try:
            first = await opened.index.patient(("A\\B", ""), "First^Patient")
            second = await opened.index.patient(("A", "B"), "Second^Patient")
        finally:
            await opened.close()
        return first.pseudo_patient_id, second.pseudo_patient_id

    first, second = asyncio.run(run())
    assert first != second


def _instances(database_url: str) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(database_url)
        try:
            return list(await connection.fetch(
                "SELECT script_name, script_sha256, pseudo_sop_instance_uid FROM instance"))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def _patient_names(database_url: str) -> list[str]:
    async def fetch() -> list[str]:
        connection = await asyncpg.connect(database_url)
        try:
            return [r[0] for r in await connection.fetch(
                "SELECT original_patient_name FROM patient")]
        finally:
            await connection.close()

    return asyncio.run(fetch())


def test_reprocessing_under_another_profile_records_the_new_rules(
    tmp_path: Path, index_env: str
) -> None:
    ds, sop = handmade.ct()
    source = tmp_path / "in"
    source.mkdir()
    (source / "ct.dcm").write_bytes(handmade.part10(ds.encode(), sop))
    assert deidentify([source], tmp_path / "out", tmp_path / "data") == 0
    [before] = _instances(index_env)
    assert deidentify([source], tmp_path / "out", tmp_path / "data", "--basic",
                      "--retain-uids") == 0
    [after] = _instances(index_env)
    assert after["script_sha256"] != before["script_sha256"]
    assert "retain_uids" in after["script_name"]
    assert after["pseudo_sop_instance_uid"] == sop  # what the file written last holds
    assert len(outputs(tmp_path / "out")) == 2  # each run's file under its own UIDs


def test_the_index_keeps_a_utf_8_name_as_it_is_spelled(
    tmp_path: Path, index_env: str
) -> None:
    ds, sop = handmade.ct()
    ds.add(0x00080005, "CS", "ISO_IR 192")
    ds.raw(0x00100010, handmade.explicit(0x00100010, "PN", "Ωρίων^Δήμητρα".encode()))
    source = tmp_path / "in"
    source.mkdir()
    (source / "ct.dcm").write_bytes(handmade.part10(ds.encode(), sop))
    assert deidentify([source], tmp_path / "out", tmp_path / "data") == 0
    assert _patient_names(index_env) == ["Ωρίων^Δήμητρα"]


def test_one_object_released_with_its_burned_in_annotation_accepted_is_recorded_so(
    database_url: str,
) -> None:
    from shared.deid.profile import build_profile
    from shared.deid.pseudonymizer import Pseudonymizer
    from shared.dicom.errors import IdentifyingPixels

    ds, sop = handmade.ct()
    ds.add(0x00280301, "CS", "YES")
    data = handmade.part10(ds.encode(), sop)

    async def run() -> bool:
        opened = await open_index(None, database_url, None)
        try:
            pseudonymizer = Pseudonymizer(opened.index, opened.site, build_profile())
            with pytest.raises(IdentifyingPixels):
                await pseudonymizer.prepare(data)
            _, record = await pseudonymizer.prepare(data, accept_burned_in_annotation=True)
        finally:
            await opened.close()
        return record.burned_in_annotation_accepted

    assert asyncio.run(run()) is True
