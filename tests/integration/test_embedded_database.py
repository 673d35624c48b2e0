"""The embedded PostgreSQL of a data folder: reused while it runs, left running for a
while after a command so the next one finds it, stopped once idle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ANON = Path(sys.executable).with_name("anon")


def _env(linger: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["EMBEDDED_DATABASE_LINGER_SECONDS"] = linger
    return env


def _status(data: Path, linger: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([str(ANON), "status", "--data-dir", str(data), "--json"],
                          env=_env(linger), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["received"] == 0
    return time.perf_counter() - started


def _postmaster(data: Path) -> int | None:
    """The server's process ID while it runs, else None."""
    try:
        pid = int((data / "postgres" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def _wait_stopped(data: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _postmaster(data) is None:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def data(tmp_path: Path) -> Path:
    # A short path: the server's socket lives in the folder.
    folder = Path(f"/tmp/anon-linger-{os.getpid()}")
    yield folder
    if _postmaster(folder) is not None:
        subprocess.run(["pkill", "-f", f"postgres -D {folder}"], check=False)
        _wait_stopped(folder, 10)
    subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_a_command_stops_its_server_at_exit_without_lingering(data: Path) -> None:
    _status(data, "0")
    assert _wait_stopped(data, 5), "the server outlived a command with lingering off"


def test_the_next_command_reuses_the_lingering_server_which_stops_once_idle(
    data: Path,
) -> None:
    _status(data, "3")
    first = _postmaster(data)
    assert first is not None, "the server did not stay up after the command"
    _status(data, "3")
    assert _postmaster(data) == first, "the second command started a server of its own"
    watchers = (data / "postgres" / ".watcher.pid").read_text()
    assert watchers.strip().isdigit()
    assert _wait_stopped(data, 30), "the idle server was not stopped"
    deadline = time.monotonic() + 10
    while (data / "postgres" / ".watcher.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (data / "postgres" / ".watcher.pid").exists(), "the watcher did not end"


def test_a_handle_left_by_a_killed_process_does_not_keep_the_server_forever(
    data: Path,
) -> None:
    _status(data, "2")
    assert _postmaster(data) is not None
    handles = data / "postgres" / ".handle_pids.json"
    probe = subprocess.Popen(["sleep", "0"])
    probe.wait()
    handles.write_text(json.dumps([probe.pid]))  # a process that died holding a handle
    assert _wait_stopped(data, 30), "a dead handle kept the idle server running"
