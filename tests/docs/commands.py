"""The commands the documents show, and a workspace to run them in as a reader would.

Convention: a command is a line of a fenced code block tagged ``sh`` in README.md or
docs/*.md. Blank lines are skipped; a leading ``$ `` prompt is dropped; a ``#`` at the
start of a line or after a space starts a comment, which is not part of the command; a
line ending in ``\\`` continues on the next. Blocks tagged otherwise (``text``, ``xml``,
``properties``) or untagged show output, synopses or file contents, never commands.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
COMMENT = re.compile(r"(^|\s)#.*$")

# What the workspace links to, relative to the repository's root.
LINKED = ["Makefile", "pyproject.toml", "scripts", ".venv", ".env.example", "tests/data"]

# The SITEID the documents' examples show.
SITE_ID = "123456"


@dataclass(frozen=True)
class Shown:
    """A command and where a document shows it."""

    command: str
    document: str
    line: int


def commands_in(text: str, document: str) -> list[Shown]:
    """The commands of the ``sh`` blocks of one document, in order."""
    found: list[Shown] = []
    fence: str | None = None
    tagged = False
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        opening = FENCE.match(line)
        if fence is None:
            if opening:
                fence, tagged = opening.group(1), opening.group(2) == "sh"
            continue
        if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            fence = None
            continue
        if not tagged:
            continue
        stripped = line.strip()
        stripped = stripped[2:] if stripped.startswith("$ ") else stripped
        stripped = COMMENT.sub("", stripped).rstrip()
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        command = (pending + stripped).strip()
        pending = ""
        if command:
            found.append(Shown(command, document, start))
    return found


def shown_commands() -> list[Shown]:
    """Every command of README.md and docs/*.md."""
    shown: list[Shown] = []
    for path in DOCUMENTS:
        shown.extend(commands_in(path.read_text(encoding="utf-8"),
                                 str(path.relative_to(ROOT))))
    return shown


@contextmanager
def workspace() -> Iterator[Path]:
    """A temporary folder that looks like the repository's root to the commands (links to
    what they read), so nothing they write lands in the repository. Its path is short:
    the embedded PostgreSQL keeps its socket in ``data/postgres``."""
    folder = Path(tempfile.mkdtemp(prefix="docs-"))
    try:
        for name in LINKED:
            link = folder / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(ROOT / name)
        yield folder
    finally:
        # A server stopping a moment after its command may still be removing its files.
        for _ in range(3):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                break
            time.sleep(1)


def reader_env(**extra: str) -> dict[str, str]:
    """A reader's environment: no deployed backends, the repository's .venv/bin first on
    PATH, the examples' SITEID, and embedded servers stopped as soon as a command ends."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "AMQP_URL", "S3_ENDPOINT", "SITE_ID", "DATA_DIR")}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["SITE_ID"] = SITE_ID
    env["EMBEDDED_DATABASE_LINGER_SECONDS"] = "0"
    env.update(extra)
    return env


def run(command: str, cwd: Path, env: dict[str, str],
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one command as written, through the shell, and require exit status 0."""
    result = subprocess.run(["/bin/sh", "-c", command], cwd=cwd, env=env, text=True,
                            capture_output=True, timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"{command!r} exited with {result.returncode}:\n{result.stdout[-2000:]}\n"
        f"{result.stderr[-2000:]}")
    return result


def require_installed(cwd: Path, env: dict[str, str]) -> None:
    """``make`` targets depend on an installed .venv; in the workspace an outdated one
    would be reinstalled from the workspace's path, so stop instead."""
    status = subprocess.run(["make", "-q", ".venv/.installed"], cwd=cwd, env=env,
                            capture_output=True, timeout=30, check=False)
    assert status.returncode == 0, "the .venv is older than pyproject.toml: run make install"


@dataclass
class Background:
    """A command left running in its own process group, as in a second terminal."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exited early:\n{self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready at {url}:\n{self.output()[-3000:]}")

    def interrupt(self, timeout: float = 30) -> None:
        """Ctrl-C: SIGINT to the whole process group, then wait; SIGKILL if it hangs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise AssertionError(
                    f"did not stop on SIGINT:\n{self.output()[-3000:]}") from None
        # The group's other members (the server under make) end with it.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.killpg(self.process.pid, signal.SIGKILL)
        raise AssertionError(f"processes left after SIGINT:\n{self.output()[-3000:]}")


def start(command: str, cwd: Path, env: dict[str, str], log: Path) -> Background:
    process = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    return Background(process, log)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")
