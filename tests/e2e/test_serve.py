"""The whole system in one process on embedded defaults: ``anon serve``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.pipeline_support import STORESCU, ServiceProcess
from tests.s3_server import free_port

pytestmark = pytest.mark.integration


def _status(data: Path, env: dict[str, str]) -> dict[str, int]:
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "status", "--data-dir", str(data), "--json"],
        capture_output=True, text=True, env=env, check=True, timeout=60)
    counts: dict[str, int] = json.loads(result.stdout)
    return counts


def _serve(tmp_path: Path, aet: str) -> tuple[ServiceProcess, Path, int, dict[str, str]]:
    """Start ``anon serve`` on embedded defaults; returns it, its data folder, its SCP
    port and the environment (without any deployed backend)."""
    data = tmp_path / "d"
    port, health = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "AMQP_URL", "S3_ENDPOINT")}
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "--data-dir", str(data), "--port",
         str(port), "--aet", aet, "--health-port", str(health)],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return ServiceProcess("serve", process, health, log), data, port, env


def test_embedded_serve_receives_a_study_by_c_store_and_deidentifies_it(tmp_path: Path) -> None:
    serve, data, port, env = _serve(tmp_path, "EMBEDDED")
    log, process = serve.log, serve.process
    try:
        serve.wait_ready(timeout=90)
        study = tmp_path / "study"
        shutil.copytree(SAMPLES / "dicompyler-core", study)
        sent = subprocess.run(
            [str(STORESCU), "-aec", "EMBEDDED", "+sd", "+r", "+sp", "*.dcm", "127.0.0.1",
             str(port), str(study)],
            capture_output=True, text=True, timeout=300, check=False,
            env={**env, "TCP_NODELAY": "1"})
        assert sent.returncode == 0, sent.stderr[-800:]
        deadline = time.monotonic() + 120
        counts = _status(data, env)
        while counts["deidentified"] < 101 and time.monotonic() < deadline:
            time.sleep(0.5)
            counts = _status(data, env)
        assert counts["received"] == 101 and counts["deidentified"] == 101
        assert counts["quarantined"] == 0 and counts["patients"] == 1
        while counts["sets_complete"] < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
            counts = _status(data, env)
        # The relinker checked the de-identified RT set: every link kept.
        assert counts["sets_complete"] == 1 and counts["sets_inconsistent"] == 0
        written = list((data / "objects" / "deidentified").rglob("*.dcm"))
        assert len(written) == 101
        assert "listening for C-STORE as EMBEDDED" in log.read_text()
    finally:
        serve.stop()
    assert process.returncode == 0


def test_anon_import_sends_files_to_a_running_serve_by_c_store(tmp_path: Path) -> None:
    from tests import synth

    serve, data, port, env = _serve(tmp_path, "ANONSCP")
    try:
        serve.wait_ready(timeout=90)
        folder = tmp_path / "in"
        folder.mkdir()
        for n, ds in enumerate(synth.make_ct_series(4)):
            synth.write(ds, folder / f"{n}.dcm")
        imported = subprocess.run(
            [sys.executable, "-m", "services.cli", "import", str(folder), "--port", str(port),
             "--no-progress"], capture_output=True, text=True, env=env, timeout=120)
        assert imported.returncode == 0, imported.stderr[-800:]
        assert "sent:        4" in imported.stdout
        deadline = time.monotonic() + 60
        while _status(data, env)["deidentified"] < 4 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _status(data, env)["deidentified"] == 4
    finally:
        serve.stop()


def _serve_on(tmp_path: Path, data: Path, port: int, database_url: str, name: str,
              **extra: str) -> ServiceProcess:
    """``anon serve`` on a test database (so a kill -9 leaves no embedded server behind)."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("AMQP_URL", "S3_ENDPOINT")},
           "DATABASE_URL": database_url, **extra}
    health = free_port()
    log = tmp_path / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "--data-dir", str(data), "--port",
         str(port), "--aet", "ANONSCP", "--health-port", str(health)],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return ServiceProcess(name, process, health, log)


def _index_counts(database_url: str) -> dict[str, int]:
    import asyncio

    import asyncpg

    async def fetch() -> dict[str, int]:
        connection = await asyncpg.connect(database_url)
        try:
            row = await connection.fetchrow(
                "SELECT (SELECT count(*) FROM instance) AS deidentified,"
                " (SELECT count(DISTINCT original_sop_instance_uid) FROM instance) AS unique,"
                " (SELECT count(*) FROM quarantined_object) AS quarantined,"
                " (SELECT count(*) FROM rt_object) AS relinked")
        finally:
            await connection.close()
        assert row is not None
        return dict(row)

    return asyncio.run(fetch())


def test_objects_acknowledged_before_a_kill_are_deidentified_once_after_restart(
    tmp_path: Path, database_url: str
) -> None:
    """A backlog sent with DCMTK's storescu (every object answered Success), then kill -9
    while most are still waiting: at the next start every one is de-identified, once."""
    from tests import synth

    total = 600
    folder = tmp_path / "backlog"
    folder.mkdir()
    for n, ds in enumerate(synth.make_ct_series(total)):
        synth.write(ds, folder / f"{n:03d}.dcm")
    data, port = tmp_path / "d", free_port()
    first = _serve_on(tmp_path, data, port, database_url, "serve-1", WORKER_CONCURRENCY="1")
    try:
        first.wait_ready(timeout=90)
        sent = subprocess.run(
            [str(STORESCU), "-aec", "ANONSCP", "+sd", "+r", "+sp", "*.dcm", "127.0.0.1",
             str(port), str(folder)],
            capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "TCP_NODELAY": "1"})
        assert sent.returncode == 0, sent.stderr[-800:]  # every object acknowledged
        first.kill()
    finally:
        first.stop()
    at_kill = _index_counts(database_url)
    assert at_kill["deidentified"] < total, "the backlog was drained before the kill"
    waiting = len(list((data / "objects" / "incoming").rglob("*.dcm")))
    # Answered objects are in the incoming folder, or still in the SCP's journal.
    journal = len(list((data / "scp-journal" / "ready").glob("*.dcm")))
    assert waiting + journal >= total - at_kill["deidentified"]

    second = _serve_on(tmp_path, data, port, database_url, "serve-2")
    try:
        second.wait_ready(timeout=90)
        deadline = time.monotonic() + 180
        counts = _index_counts(database_url)
        while counts["deidentified"] < total and time.monotonic() < deadline:
            time.sleep(0.5)
            counts = _index_counts(database_url)
        del counts["relinked"]
        assert counts == {"deidentified": total, "unique": total, "quarantined": 0}
        time.sleep(1)  # nothing more arrives
        assert _index_counts(database_url)["deidentified"] == total
        written = list((data / "objects" / "deidentified").rglob("*.dcm"))
        assert len(written) == total
        # Results are durable, so the received copies (PHI) are gone.
        assert list((data / "objects" / "incoming").rglob("*.dcm")) == []
        unprocessed = total - at_kill["deidentified"]
        found = re.search(r"(\d+) received objects announced again", second.log.read_text())
        assert found is not None
        # Those of the incoming folder are announced again, those of the journal relayed.
        assert int(found[1]) <= unprocessed <= int(found[1]) + journal
        # Relink messages lost with the process are announced again too.
        while _index_counts(database_url)["relinked"] < total and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _index_counts(database_url)["relinked"] == total
    finally:
        second.stop()
    assert second.process.returncode == 0
    print(f"killed with {at_kill['deidentified']} of {total} de-identified, "
          f"{waiting} waiting in the incoming folder, {journal} in the journal")


def test_an_object_released_from_quarantine_goes_through_a_running_serve(
    tmp_path: Path, database_url: str
) -> None:
    """An SR refused by the default switch; serve restarted accepting SRs; `anon quarantine
    release` while it runs: the object is de-identified within seconds."""
    from tests import synth

    folder = tmp_path / "sr"
    folder.mkdir()
    synth.write(synth.make_sr(), folder / "sr.dcm")
    data, port = tmp_path / "d", free_port()
    env = {**{k: v for k, v in os.environ.items() if k not in ("AMQP_URL", "S3_ENDPOINT")},
           "DATABASE_URL": database_url}

    def quarantine(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "quarantine", "--data-dir", str(data),
             *args], capture_output=True, text=True, env=env, timeout=60)

    first = _serve_on(tmp_path, data, port, database_url, "serve-1")
    try:
        first.wait_ready(timeout=90)
        sent = subprocess.run(
            [str(STORESCU), "-aec", "ANONSCP", "+sd", "+r", "+sp", "*.dcm", "127.0.0.1",
             str(port), str(folder)], capture_output=True, text=True, timeout=60,
            env={**os.environ, "TCP_NODELAY": "1"})
        assert sent.returncode == 0, sent.stderr[-800:]
        deadline = time.monotonic() + 30
        while _index_counts(database_url)["quarantined"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        first.stop()
    listed = quarantine("list", "--json")
    [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (entry["stage"], entry["reason_code"]) == ("deidentify", "filtered"), entry
    second = _serve_on(tmp_path, data, port, database_url, "serve-2",
                       ACCEPT_STRUCTURED_REPORTS="true")
    try:
        second.wait_ready(timeout=90)
        released = quarantine("release", entry["key"])
        assert released.returncode == 0, released.stderr
        deadline = time.monotonic() + 30
        while _index_counts(database_url)["deidentified"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _index_counts(database_url)["deidentified"] == 1
        assert quarantine("list").stdout == ""
        time.sleep(0.5)
        assert list((data / "objects" / "incoming").rglob("*.dcm")) == []
        assert list((data / "objects" / "quarantine").rglob("*.dcm")) == []
    finally:
        second.stop()
