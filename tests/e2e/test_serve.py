"""The whole system in one process on embedded defaults: ``anon serve``."""

from __future__ import annotations

import json
import os
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
