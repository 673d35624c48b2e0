"""``anon backup`` and ``anon restore``: a restored index gives the same pseudonyms and UIDs,
an older backup is migrated once, and what is not safe is refused with the file and the
target left as they were."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import asyncpg
import pydicom
import pytest

from shared.index.backup import BackupError, find_tool
from shared.index.migrations import migrate, migrations_dir
from tests import synth
from tests.conftest import fresh_database

pytestmark = pytest.mark.integration

ANON = Path(sys.executable).with_name("anon")
IDENTITY = ("PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID",
            "SOPInstanceUID", "FrameOfReferenceUID", "StudyDate")


def anon(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SITE_ID")}
    if database_url:
        env["DATABASE_URL"] = database_url
    return subprocess.run([str(ANON), *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def write_study(folder: Path, patient: int) -> None:
    folder.mkdir(parents=True)
    for n, ds in enumerate(synth.make_rt_set(3, 2, 1, patient_index=patient).all()):
        synth.write(ds, folder / f"{n:02d}.dcm")


def identities(out: Path) -> list[tuple[str, ...]]:
    """Where each de-identified file went and the identifying values it carries."""
    found = []
    for path in sorted(out.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found.append((str(path.relative_to(out)),
                      *(str(ds.get(keyword, "")) for keyword in IDENTITY)))
    return found


def deidentify(source: Path, out: Path, database_url: str, data: Path) -> None:
    ok(anon("deidentify", str(source), "--out", str(out), "--recursive", "--data-dir",
            str(data), "--no-progress", database_url=database_url))


def query(url: str, sql: str) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url)
        try:
            return list(await connection.fetch(sql))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def table_count(url: str) -> int:
    [row] = query(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    return int(row[0])


def test_a_restored_index_gives_the_same_pseudonyms_and_uids(
    database_url: str, admin_url: str, tmp_path: Path
) -> None:
    write_study(tmp_path / "in", 0)
    deidentify(tmp_path / "in", tmp_path / "out-before", database_url, tmp_path / "data")
    backup = tmp_path / "phi-index.backup"

    printed = anon("backup", str(backup), database_url=database_url)
    assert printed.returncode == 0, printed.stderr
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert "patients:    1" in printed.stdout and "instances:   6" in printed.stdout
    assert f"schema:      {sorted(migrations_dir().glob('*.sql'))[-1].stem}" in printed.stdout
    shown = (printed.stdout + printed.stderr).encode()
    assert not [s for s in synth.phi_strings(synth.PHI) if s in shown]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    with fresh_database(admin_url) as restored:
        assert "patients:    1" in ok(anon("restore", str(backup), database_url=restored))
        deidentify(tmp_path / "in", tmp_path / "out-after", restored, tmp_path / "data")
        before, after = identities(tmp_path / "out-before"), identities(tmp_path / "out-after")
        assert len(before) == 6 and after == before
        # The counters came along: the next patient is the second, not a second first.
        write_study(tmp_path / "in-next", 1)
        deidentify(tmp_path / "in-next", tmp_path / "out-next", restored, tmp_path / "data")
        [first] = {row[1] for row in before}
        [second] = {row[1] for row in identities(tmp_path / "out-next")}
        assert second == first[:-1] + "2"


def test_an_older_backup_is_migrated_once_and_keeps_its_site(
    database_url: str, admin_url: str, tmp_path: Path
) -> None:
    only_first = tmp_path / "migrations"
    only_first.mkdir()
    shutil.copy(migrations_dir() / "0001_phi_index.sql", only_first)

    async def old_index() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await migrate(connection, only_first)
            await connection.execute(
                "INSERT INTO site (site_id, secret) VALUES ('111111', $1)", b"k" * 32)
            await connection.execute(
                "INSERT INTO patient (original_patient_id, pseudo_patient_id,"
                " pseudo_patient_name, date_offset_days)"
                " VALUES ('OLD-1', '111111-000007', '111111-000007', 5)")
        finally:
            await connection.close()

    asyncio.run(old_index())
    backup = tmp_path / "old.backup"
    assert "schema:      0001_phi_index" in ok(anon("backup", str(backup),
                                                      database_url=database_url))
    later = sorted(p.stem for p in migrations_dir().glob("*.sql"))[1:]

    with fresh_database(admin_url) as restored:
        printed = ok(anon("restore", str(backup), database_url=restored))
        assert f"applied now: {', '.join(later)}" in printed
        assert "SITEID:      111111" in printed
        [site] = query(restored, "SELECT site_id, secret FROM site")
        assert (site["site_id"], bytes(site["secret"])) == ("111111", b"k" * 32)
        applied = query(restored, "SELECT name, applied_at FROM schema_migrations")
        assert sorted(r["name"] for r in applied) == sorted(
            p.name for p in migrations_dir().glob("*.sql"))

        assert "SITEID 111111" in ok(anon("migrate", database_url=restored))
        assert query(restored, "SELECT name, applied_at FROM schema_migrations") == applied
        [patient] = query(restored, "SELECT pseudo_patient_id FROM patient")
        assert patient["pseudo_patient_id"] == "111111-000007"


def test_restore_refuses_a_database_that_holds_an_index(
    database_url: str, admin_url: str, tmp_path: Path
) -> None:
    ok(anon("migrate", database_url=database_url))
    backup = tmp_path / "phi-index.backup"
    ok(anon("backup", str(backup), database_url=database_url))
    with fresh_database(admin_url) as other:
        site = ok(anon("migrate", database_url=other)).split()[-1]
        refused = anon("restore", str(backup), database_url=other)
        assert refused.returncode == 1
        assert f"already holds a PHI index of SITEID {site}" in refused.stderr
        assert "new, empty database" in refused.stderr
        [row] = query(other, "SELECT site_id FROM site")
        assert row["site_id"] == site

    with fresh_database(admin_url) as other:
        query(other, "CREATE TABLE unrelated (x int)")
        refused = anon("restore", str(backup), database_url=other)
        assert refused.returncode == 1 and "is not empty" in refused.stderr
        assert table_count(other) == 1


def test_restore_refuses_what_is_not_a_whole_backup(
    database_url: str, admin_url: str, tmp_path: Path
) -> None:
    ok(anon("migrate", database_url=database_url))
    backup = tmp_path / "phi-index.backup"
    ok(anon("backup", str(backup), database_url=database_url))
    whole = backup.read_bytes()
    truncated = tmp_path / "truncated.backup"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    text = tmp_path / "notes.backup"
    text.write_text("not a backup\n")

    with fresh_database(admin_url) as empty:
        for path, said in ((tmp_path / "missing.backup", "no such file"),
                           (text, "is not a backup made by anon backup"),
                           (truncated, "is not a readable backup")):
            refused = anon("restore", str(path), database_url=empty)
            assert refused.returncode == 1, refused.stdout
            assert said in refused.stderr
            assert "Traceback" not in refused.stderr
        assert table_count(empty) == 0


def test_backup_keeps_an_existing_file_unless_forced(database_url: str, tmp_path: Path) -> None:
    ok(anon("migrate", database_url=database_url))
    backup = tmp_path / "phi-index.backup"
    backup.write_bytes(b"yesterday's")

    refused = anon("backup", str(backup), database_url=database_url)
    assert refused.returncode == 1 and "exists; give --force" in refused.stderr
    assert backup.read_bytes() == b"yesterday's"

    ok(anon("backup", str(backup), "--force", database_url=database_url))
    assert backup.read_bytes().startswith(b"PGDMP")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phi-index.backup"]


def test_the_embedded_index_is_backed_up_and_restored_with_its_own_tools(
    tmp_path: Path,
) -> None:
    # Short folders: the embedded server keeps its socket in DATA_DIR/postgres.
    source, target = (Path(f"/tmp/anon-backup-{os.getpid()}-{n}") for n in ("a", "b"))
    try:
        write_study(tmp_path / "in", 2)
        ok(anon("deidentify", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                "--data-dir", str(source), "--no-progress"))
        backup = tmp_path / "embedded.backup"
        ok(anon("backup", str(backup), "--data-dir", str(source)))
        assert "instances:   6" in ok(anon("restore", str(backup), "--data-dir", str(target)))
        [pseudonym] = [p.name for p in (tmp_path / "out").iterdir()]
        found = ok(anon("lookup", pseudonym, "--data-dir", str(target)))
        assert f"original ID:       {synth.phi_for(2).patient_id}" in found
    finally:
        for folder in (source, target):
            shutil.rmtree(folder, ignore_errors=True)


def test_an_unreachable_server_is_said_so(tmp_path: Path) -> None:
    refused = anon("backup", str(tmp_path / "x.backup"),
                   database_url="postgresql://postgres@127.0.0.1:1/phi")
    assert refused.returncode == 3 and "cannot connect" in refused.stderr
    assert not (tmp_path / "x.backup").exists()


def test_without_a_tool_of_the_servers_version_the_versions_found_are_named() -> None:
    with pytest.raises(BackupError) as refused:
        find_tool("pg_dump", 99)
    said = str(refused.value)
    assert "no pg_dump of PostgreSQL 99" in said and "postgresql-client-99" in said
    system = shutil.which("pg_dump")
    if system:
        assert f"at {system}" in said
