"""The embedded PostgreSQL of a data folder (``DATA_DIR/postgres``), started on first use.

Every process that opens the folder's server takes a handle on it (pgserver keeps the
handles' process IDs in the folder); a running server is reused, never started twice.
By default the last handle to close stops the server. A command-line process may instead
leave it running for a while (:func:`linger_after_exit`), so that the next command in a
row finds it running: a watcher process started at exit stops it once nobody has used it
for that long. ``python -m shared.index.embedded FOLDER SECONDS`` is that watcher.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from shared.index.errors import DatabaseUnavailable

# pgserver asks platformdirs for a runtime folder it does not use here; on servers without
# XDG_RUNTIME_DIR that warns at every start and stop.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

# PostgreSQL keeps its socket in this folder; socket paths are limited to ~107 bytes.
MAX_FOLDER_LENGTH = 90
LAST_USED = ".last_used"
WATCHER_PID = ".watcher.pid"
HANDLES = ".handle_pids.json"

_linger_seconds = 0.0
_watched: set[Path] = set()  # folders whose watcher this process starts at exit


def linger_after_exit(seconds: float) -> None:
    """Leave embedded servers this process opens running ``seconds`` after it exits
    (0: stop them at exit, the default)."""
    global _linger_seconds
    _linger_seconds = max(0.0, seconds)


def embedded_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``data_dir/postgres``; returns its URL."""
    folder = (data_dir / "postgres").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if len(str(folder)) > MAX_FOLDER_LENGTH:
        raise DatabaseUnavailable(
            f"the data directory path is too long for the embedded PostgreSQL socket "
            f"({len(str(folder))} characters); use a shorter --data-dir or set DATABASE_URL"
        )
    linger = _linger_seconds
    try:
        server = _server(folder, cleanup_mode=None if linger else "stop")
    except Exception as exc:
        raise DatabaseUnavailable(f"the embedded PostgreSQL did not start: {exc}") from exc
    if linger:
        _touch(folder)
        if folder not in _watched:
            _watched.add(folder)
            # atexit runs in reverse order: this runs before pgserver drops this handle.
            atexit.register(_start_watcher, folder, linger)
    return str(server.get_uri())


def _server(folder: Path, cleanup_mode: str | None) -> Any:
    import pgserver

    return pgserver.get_server(folder, cleanup_mode=cleanup_mode)  # type: ignore[attr-defined]


def _touch(folder: Path) -> None:
    with contextlib.suppress(OSError):
        (folder / LAST_USED).touch()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_handles(folder: Path, without: int | None = None) -> list[int]:
    try:
        pids = json.loads((folder / HANDLES).read_text())
    except (OSError, ValueError):
        return []
    return [p for p in pids if isinstance(p, int) and p != without and _alive(p)]


def _watcher_running(folder: Path) -> bool:
    try:
        pid = int((folder / WATCHER_PID).read_text())
    except (OSError, ValueError):
        return False
    return pid != os.getpid() and _alive(pid)


def _start_watcher(folder: Path, linger: float) -> None:
    _touch(folder)
    if _watcher_running(folder):
        return
    with contextlib.suppress(OSError):
        subprocess.Popen(
            [sys.executable, "-m", "shared.index.embedded", str(folder), str(linger)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )


def _idle_seconds(folder: Path) -> float:
    try:
        return time.time() - (folder / LAST_USED).stat().st_mtime
    except OSError:
        return float("inf")


def watch(folder: Path, linger: float, poll: float = 5.0) -> None:
    """Stop the server of ``folder`` once it has had no live handle for ``linger``
    seconds since its last use; return at once if another watcher runs."""
    if _watcher_running(folder):
        return
    (folder / WATCHER_PID).write_text(str(os.getpid()))
    try:
        while folder.is_dir():
            if _live_handles(folder, without=os.getpid()):
                _touch(folder)
            elif _idle_seconds(folder) >= linger:
                stop(folder)
                return
            time.sleep(min(poll, max(0.1, linger / 4)))
    finally:
        with contextlib.suppress(OSError):
            if (folder / WATCHER_PID).read_text() == str(os.getpid()):
                (folder / WATCHER_PID).unlink()


def _running(folder: Path) -> bool:
    try:
        return _alive(int((folder / "postmaster.pid").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return False


def stop(folder: Path) -> None:
    """Stop the server of ``folder`` unless it is stopped already or a live process holds
    a handle on it: take a handle and drop it as the last one. Handles of processes that
    died without dropping theirs are forgotten first."""
    import pgserver.postgres_server as postgres_server

    if not _running(folder):
        return
    with postgres_server.PostgresServer._lock:
        live = _live_handles(folder)
        if live:
            return
        with contextlib.suppress(OSError):
            (folder / HANDLES).write_text("[]")
    server = _server(folder, cleanup_mode="stop")
    server.cleanup()


if __name__ == "__main__":
    watch(Path(sys.argv[1]), float(sys.argv[2]))
