"""RSNA's own CTP scripts run unchanged, through ``anon deidentify`` and the PHI index."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import pytest

from shared.index.connect import open_index
from shared.index.phi_index import PhiIndex
from tests import synth
from tests.conftest import SAMPLES
from tests.helpers import dcmdump_errors, deidentify, originals_by_pseudo_sop, outputs, read

pytestmark = pytest.mark.integration

SCRIPTS = Path(__file__).resolve().parents[1] / "data" / "ctp-scripts"
JAVA = SCRIPTS / "rsna-java-dicom-anonymizer.script"
PYTHON = SCRIPTS / "rsna-python-default-anonymizer.script"


def ctp_hashdate(day: str, patient_id: str) -> str:
    """CTP's @hashdate(this,PatientID), computed independently of the implementation."""
    digits = str(int.from_bytes(hashlib.md5(patient_id.encode()).digest(), "big"))
    shift = int(digits[-4:]) % 3650 or 1
    moved = date(int(day[:4]), int(day[4:6]), int(day[6:8])) - timedelta(days=shift)
    return moved.strftime("%Y%m%d")


@pytest.fixture
def three_patients(tmp_path: Path) -> Path:
    source = tmp_path / "in"
    source.mkdir()
    for patient in range(3):
        for n, ds in enumerate(synth.make_ct_series(3, patient_index=patient)):
            synth.write(ds, source / f"p{patient}_{n}.dcm")
    return source


def test_java_anonymizer_script_gives_siteid_pseudonyms_and_ctp_date_shifts(
    tmp_path: Path, index_env: str, three_patients: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SITE_ID", "123456")
    out = tmp_path / "out"
    assert deidentify([three_patients], out, tmp_path / "data", "--script", str(JAVA),
                      "--jobs", "1") == 0
    originals = {str(read(p).SOPInstanceUID): read(p) for p in three_patients.iterdir()}
    source_of = originals_by_pseudo_sop(index_env)
    by_patient: dict[str, set[str]] = {}
    for path in outputs(out):
        ds = read(path)
        assert ds.PatientID == ds.PatientName
        assert ds.SOPInstanceUID.startswith("1.2.826.0.1.3680043.10.474.123456.")
        assert "PatientIdentityRemoved" not in ds  # scripted without @always(): not created
        assert ds[0x0013, 0x0010].value == "CTP"
        assert ds[0x0013, 0x1013].value == "123456"  # SiteID: the @SITEID parameter
        assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == [
            "113100", "113107", "113108"]
        original = originals[source_of[str(ds.SOPInstanceUID)]]
        by_patient.setdefault(str(original.PatientID), set()).add(str(ds.PatientID))
        assert ds.StudyDate == ctp_hashdate(original.StudyDate, original.PatientID)
        assert ds.SeriesDate == ctp_hashdate(original.SeriesDate, original.PatientID)
    assert sorted(v for values in by_patient.values() for v in values) == [
        "123456-000001", "123456-000002", "123456-000003"]
    assert all(len(v) == 1 for v in by_patient.values())


def test_java_script_removes_the_phi_of_the_elements_it_handles(
    tmp_path: Path, index_env: str
) -> None:
    source = tmp_path / "in"
    shutil.copytree(SAMPLES / "dicompyler-core" / "example_data", source)
    for n, ds in enumerate(synth.make_ct_series(2)):
        synth.write(ds, source / f"planted{n}.dcm")
    out = tmp_path / "out"
    assert deidentify([source], out, tmp_path / "data", "--script", str(JAVA),
                      "--accept-structured-reports") == 0
    handled = synth.PHI_STRINGS
    for path in outputs(out):
        data = path.read_bytes()
        ds = read(path)
        for keyword in ("InstitutionName", "ReferringPhysicianName", "PatientBirthDate",
                        "AccessionNumber", "StudyID", "OperatorsName", "OtherPatientIDs",
                        "PatientAddress", "ImageComments"):
            value = str(ds.get(keyword, "") or "")
            assert not any(s.decode() in value for s in handled if len(s) > 4), keyword
        assert synth.PHI.patient_name.encode() not in data
        assert synth.PHI.patient_id.encode() not in data
        assert b"QUILLON PRIVATE" not in data
        assert not any(e.tag.is_private and e.tag.group != 0x0013 for e in ds)


def test_python_anonymizer_script_uses_the_index_pseudonyms(
    tmp_path: Path, index_env: str, three_patients: Path
) -> None:
    out = tmp_path / "out"
    assert deidentify([three_patients], out, tmp_path / "data", "--script", str(PYTHON)) == 0

    async def offsets() -> dict[str, tuple[str, int]]:
        connection = await asyncpg.connect(index_env)
        try:
            rows = await connection.fetch(
                "SELECT original_patient_id, pseudo_patient_id, date_offset_days FROM patient")
        finally:
            await connection.close()
        return {r["original_patient_id"]: (r["pseudo_patient_id"], r["date_offset_days"])
                for r in rows}

    index = asyncio.run(offsets())
    assert len(index) == 3
    originals = {str(read(p).SOPInstanceUID): read(p) for p in three_patients.iterdir()}
    source_of = originals_by_pseudo_sop(index_env)
    for path in outputs(out):
        ds = read(path)
        original = originals[source_of[str(ds.SOPInstanceUID)]]
        pseudo, offset = index[str(original.PatientID)]
        assert ds.PatientID == ds.PatientName == pseudo
        moved = date(2019, 3, 14) - timedelta(days=offset)
        assert ds.StudyDate == moved.strftime("%Y%m%d")
        assert ds.SOPInstanceUID.startswith("2.25.")
        assert "InstitutionName" not in ds  # unlisted elements are removed
        assert not any(e.tag.is_private for e in ds.iterall())


def test_script_identity_is_recorded_with_every_object(
    tmp_path: Path, index_env: str, three_patients: Path
) -> None:
    assert deidentify([three_patients], tmp_path / "out", tmp_path / "data",
                      "--script", str(JAVA)) == 0

    async def recorded() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(index_env)
        try:
            return await connection.fetch(
                "SELECT DISTINCT script_name, script_sha256 FROM instance")
        finally:
            await connection.close()

    rows = asyncio.run(recorded())
    assert [(r["script_name"], r["script_sha256"]) for r in rows] == [
        (f"CTP script {JAVA.name}", hashlib.sha256(JAVA.read_bytes()).hexdigest())]


def test_concurrent_integer_requests_get_one_value_per_key(index_env: str) -> None:
    async def scenario() -> tuple[list[list[int]], int]:
        opened = await open_index(None, index_env, max_connections=12)
        try:
            racers = [PhiIndex(opened.pool) for _ in range(12)]
            keys = [f"1.2.3.{n}" for n in range(40)]
            results = await asyncio.gather(*(
                asyncio.gather(*(r.integer("uid", k) for k in keys)) for r in racers))
            count = await opened.pool.fetchval(
                "SELECT count(*) FROM integer_value WHERE key_type = 'uid'")
        finally:
            await opened.close()
        return [list(r) for r in results], count

    results, count = asyncio.run(scenario())
    assert all(r == results[0] for r in results)  # every racer saw the same number per key
    assert len(set(results[0])) == 40 and count == 40


def test_two_processes_running_the_java_script_agree_on_counter_uids(
    tmp_path: Path, index_env: str
) -> None:
    series = synth.make_ct_series(40)
    halves = [tmp_path / "h0", tmp_path / "h1"]
    for half in halves:
        half.mkdir()
    for n, ds in enumerate(series):
        synth.write(ds, halves[n % 2] / f"{n:03d}.dcm")
    env = {**os.environ, "DATABASE_URL": index_env}
    runs = [subprocess.Popen(
        [sys.executable, "-m", "services.cli", "deidentify", str(half), "--out",
         str(tmp_path / f"o{k}"), "--data-dir", str(tmp_path / f"d{k}"), "--jobs", "1",
         "--no-progress", "--script", str(JAVA)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for k, half in enumerate(halves)]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err.decode(errors="replace")[-2000:]
    written = [read(p) for k in range(2) for p in outputs(tmp_path / f"o{k}")]
    assert len(written) == 40
    assert len({str(ds.StudyInstanceUID) for ds in written}) == 1
    assert len({str(ds.SeriesInstanceUID) for ds in written}) == 1
    assert len({str(ds.SOPInstanceUID) for ds in written}) == 40


@pytest.mark.parametrize("script", [JAVA, PYTHON], ids=["java", "python"])
def test_rsna_scripts_over_every_real_sample_leave_no_handled_phi(
    tmp_path: Path, index_env: str, script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.deid.ctp_script import load_script

    monkeypatch.setenv("SITE_ID", "123456")
    out, data = tmp_path / "out", tmp_path / "data"
    assert deidentify([SAMPLES], out, data, "--extensions", "*", "--script", str(script),
                      "--accept-structured-reports", "--accept-secondary-captures",
                      "--jobs", "2") == 0
    loaded = load_script(script)
    removed = {e.tag for e in loaded.entries
               if (e.enabled or loaded.dialect == "rsna") and "@remove" in e.text}
    listed = {e.tag for e in loaded.entries}
    written = outputs(out)
    assert len(written) > 200
    for path in written:
        ds = read(path)
        if "PatientID" in ds or loaded.dialect == "rsna":  # CTP creates nothing unasked
            assert ds.PatientID.startswith("123456-")
        present = {int(e.tag) for e in ds}
        assert not present & removed, path.name
        if loaded.dialect == "rsna":
            assert present <= listed | {0x00100010, 0x00100020}, path.name
        assert not any(e.tag.is_private and e.tag.group != 0x0013 for e in ds)
        assert dcmdump_errors(path) == ""
