"""Same pseudonyms and UIDs whichever process handles an object, and on every re-run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from shared.index.connect import open_index
from shared.index.migrations import migrate
from shared.index.phi_index import PhiIndex
from tests import synth
from tests.helpers import deidentify, outputs, read, tree

pytestmark = pytest.mark.integration


def _write_study(folder: Path, patients: int = 3, per_patient: int = 40) -> None:
    folder.mkdir(parents=True)
    for patient in range(patients):
        for n, ds in enumerate(synth.make_ct_series(per_patient, patient_index=patient)):
            synth.write(ds, folder / f"p{patient}_{n:03d}.dcm")


def test_rerun_gives_identical_output(tmp_path: Path, index_env: str) -> None:
    source = tmp_path / "in"
    _write_study(source, patients=2, per_patient=20)
    assert deidentify([source], tmp_path / "a", tmp_path / "data") == 0
    assert deidentify([source], tmp_path / "b", tmp_path / "data") == 0
    first = tree(tmp_path / "a")
    assert len(first) == 40
    assert first == tree(tmp_path / "b")


async def _seed_site(url: str, secret: bytes) -> None:
    connection = await asyncpg.connect(url)
    try:
        await migrate(connection)
        await connection.execute("INSERT INTO site (site_id, secret) VALUES ('424242', $1)",
                                 secret)
    finally:
        await connection.close()


def test_jobs_give_the_same_result_as_one_process(
    tmp_path: Path, admin_url: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two fresh indexes of the same site: one run with 1 process, one with 2."""
    from tests.conftest import _with_database

    other = _with_database(admin_url, "anon_jobs_" + os.urandom(4).hex())

    async def create() -> None:
        connection = await asyncpg.connect(admin_url)
        await connection.execute(f'CREATE DATABASE "{other.rsplit("/", 1)[1].split("?")[0]}"')
        await connection.close()

    asyncio.run(create())
    try:
        secret = os.urandom(32)
        for url in (database_url, other):
            asyncio.run(_seed_site(url, secret))
        source = tmp_path / "in"
        _write_study(source)
        monkeypatch.setenv("DATABASE_URL", database_url)
        assert deidentify([source], tmp_path / "one", tmp_path / "d1", "--jobs", "1") == 0
        monkeypatch.setenv("DATABASE_URL", other)
        assert deidentify([source], tmp_path / "two", tmp_path / "d2", "--jobs", "2") == 0
        assert tree(tmp_path / "one") == tree(tmp_path / "two")
        assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [
            "424242-000001", "424242-000002", "424242-000003"
        ]
    finally:
        async def drop() -> None:
            connection = await asyncpg.connect(admin_url)
            name = other.rsplit("/", 1)[1].split("?")[0]
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await connection.close()

        asyncio.run(drop())


def test_two_processes_on_halves_of_one_study_agree(tmp_path: Path, index_env: str) -> None:
    source = tmp_path / "in"
    source.mkdir()
    series = synth.make_ct_series(60)
    halves = [tmp_path / "half0", tmp_path / "half1"]
    for half in halves:
        half.mkdir()
    for n, ds in enumerate(series):
        synth.write(ds, halves[n % 2] / f"{n:03d}.dcm")
    env = {**os.environ, "DATABASE_URL": index_env}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", "deidentify", str(half), "--out",
             str(tmp_path / f"out{k}"), "--data-dir", str(tmp_path / f"data{k}"),
             "--jobs", "1", "--no-progress"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for k, half in enumerate(halves)
    ]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err.decode(errors="replace")[-2000:]
    seen = [[read(p) for p in outputs(tmp_path / f"out{k}")] for k in range(2)]
    assert [len(s) for s in seen] == [30, 30]
    for attribute in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID",
                      "FrameOfReferenceUID", "StudyDate", "AccessionNumber"):
        values = {str(ds.get(attribute)) for s in seen for ds in s}
        assert len(values) == 1, attribute
    all_uids = {str(ds.SOPInstanceUID) for s in seen for ds in s}
    assert len(all_uids) == 60


def test_eight_concurrent_requests_for_one_new_patient_get_one_pseudonym(
    index_env: str,
) -> None:
    async def scenario() -> tuple[set[str], set[str], int]:
        opened = await open_index(None, index_env, max_connections=10)
        try:
            # separate index objects: no shared cache, eight connections racing
            racers = [PhiIndex(opened.pool) for _ in range(8)]
            same = await asyncio.gather(
                *(r.patient(("PID-RACE", ""), "Race^Patient") for r in racers)
            )
            different = await asyncio.gather(
                *(r.patient((f"PID-{n}", ""), "Other") for n, r in enumerate(racers))
            )
            rows = await opened.pool.fetchval("SELECT count(*) FROM patient")
        finally:
            await opened.close()
        return ({p.pseudo_patient_id for p in same},
                {p.pseudo_patient_id for p in different}, rows)

    same, different, rows = asyncio.run(scenario())
    assert len(same) == 1
    assert len(different) == 8 and not same & different
    assert rows == 9


def test_site_id_is_set_at_first_start_and_never_changes(
    index_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli.main import main

    monkeypatch.setenv("SITE_ID", "123456")
    assert main(["migrate"]) == 0
    assert "SITEID 123456" in capsys.readouterr().out
    monkeypatch.setenv("SITE_ID", "654321")
    assert main(["migrate"]) == 3
    assert "123456" in capsys.readouterr().err
    monkeypatch.setenv("SITE_ID", "12ab")
    assert main(["migrate"]) == 2
    assert "SITE_ID" in capsys.readouterr().err


def test_every_written_object_is_recorded_with_the_profile_identity(
    tmp_path: Path, index_env: str
) -> None:
    source = tmp_path / "in"
    _write_study(source, patients=2, per_patient=30)
    assert deidentify([source], tmp_path / "out", tmp_path / "data", "--jobs", "2") == 0
    assert deidentify([source], tmp_path / "out", tmp_path / "data", "--jobs", "1") == 0

    async def rows() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(index_env)
        try:
            return await connection.fetch(
                "SELECT i.pseudo_sop_instance_uid, i.script_name, i.script_sha256, s.id"
                " FROM instance i LEFT JOIN study s ON s.id = i.study"
            )
        finally:
            await connection.close()

    recorded = asyncio.run(rows())
    written = {str(read(p).SOPInstanceUID) for p in outputs(tmp_path / "out")}
    assert {r["pseudo_sop_instance_uid"] for r in recorded} == written
    assert len(recorded) == 60  # the second run recorded nothing twice
    assert all(r["id"] is not None for r in recorded)
    assert {r["script_name"] for r in recorded} == {
        "built-in: PS3.15 Basic Profile, retain_patient_characteristics, "
        "retain_longitudinal_modified_dates"
    }
    assert all(len(r["script_sha256"]) == 64 for r in recorded)
