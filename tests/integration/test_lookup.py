"""``anon lookup``: from a pseudonymous patient ID back to the original patient."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from services.cli.main import main
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
