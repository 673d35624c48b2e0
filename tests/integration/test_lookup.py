"""``anon lookup``: from a pseudonymous patient ID back to the original patient."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pydicom
import pytest

from services.cli.main import main
from shared.index import audit
from shared.index.connect import open_index
from shared.index.lookup import read_patient, read_patient_audited
from tests import synth
from tests.helpers import deidentify, outputs

pytestmark = pytest.mark.integration


def test_a_pseudonym_leads_back_to_the_original_patient_and_study(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    series = synth.make_ct_series(2)
    for n, ds in enumerate(series):
        synth.write(ds, source / f"{n}.dcm")
    data = tmp_path / "data"
    assert deidentify([source], tmp_path / "out", data) == 0
    written = pydicom.dcmread(outputs(tmp_path / "out")[0])
    capsys.readouterr()

    assert main(["lookup", str(written.PatientID), "--data-dir", str(data), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["original_patient_id"] == series[0].PatientID
    assert found["original_patient_name"] == str(series[0].PatientName)
    [study] = found["studies"]
    assert study["original_study_uid"] == series[0].StudyInstanceUID
    assert study["pseudo_study_uid"] == written.StudyInstanceUID
    assert study["original_accession"] == series[0].AccessionNumber
    assert study["pseudo_accession"] == written.AccessionNumber

    assert main(["lookup", str(written.PatientID), "--data-dir", str(data)]) == 0
    text = capsys.readouterr().out
    assert str(series[0].PatientName) in text and series[0].PatientID in text


def test_an_unknown_pseudonym_is_an_error_naming_it(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lookup", "999999-000042", "--data-dir", str(tmp_path / "data")]) == 1
    assert "999999-000042" in capsys.readouterr().err


def test_the_audited_read_is_the_plain_read_and_writes_its_record(database_url: str) -> None:
    """The index API's lookup reads and records in one statement: the same answer as
    ``read_patient`` (studies oldest first, a patient without studies has none), and one
    record per read, ok or not-found."""
    async def run() -> None:
        await (await open_index(None, database_url)).close()  # migrations
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(
                "INSERT INTO patient (id, original_patient_id, original_patient_name,"
                " pseudo_patient_id, pseudo_patient_name, date_offset_days) VALUES"
                " (1, 'MRN1', 'DOE^JANE', '123456-000001', '123456-000001', 10),"
                " (2, 'MRN2', 'ROE^JOHN', '123456-000002', '123456-000002', 20)")
            await connection.execute(
                "INSERT INTO study (id, patient, original_study_uid, pseudo_study_uid,"
                " original_study_date, pseudo_study_date, created_at) VALUES"
                " (1, 1, '1.2.3.2', '2.25.2', '20200102', '20191223', now()),"
                " (2, 1, '1.2.3.1', '2.25.1', '20200101', '20191222', now() - interval '1 day')")
            for pseudonym in ("123456-000001", "123456-000002", "123456-000009"):
                record = audit.fields("reader", "phi-reader", "127.0.0.1", "patient.phi",
                                      pseudonym)
                found = await read_patient_audited(connection, pseudonym, record)
                assert found == await read_patient(connection, pseudonym)
            first = await read_patient(connection, "123456-000001")
            assert first is not None and first.original_patient_name == "DOE^JANE"
            assert [s.original_study_uid for s in first.studies] == ["1.2.3.1", "1.2.3.2"]
            second = await read_patient(connection, "123456-000002")
            assert second is not None and second.studies == []
            rows = await connection.fetch(
                "SELECT actor, role, client, action, target, outcome, status, detail"
                " FROM audit_event ORDER BY id")
            assert [tuple(r) for r in rows] == [
                ("reader", "phi-reader", "127.0.0.1", "patient.phi", "123456-000001",
                 audit.OK, 200, "{}"),
                ("reader", "phi-reader", "127.0.0.1", "patient.phi", "123456-000002",
                 audit.OK, 200, "{}"),
                ("reader", "phi-reader", "127.0.0.1", "patient.phi", "123456-000009",
                 audit.NOT_FOUND, 404, "{}"),
            ]
        finally:
            await connection.close()

    asyncio.run(run())
