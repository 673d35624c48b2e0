"""scripts/system-packages: what ``make test`` does about the Debian packages the tests use.

The script is run with stand-ins for ``dpkg-query``, ``id``, ``sudo`` and ``apt-get`` first
on PATH, so each case (installed, root, password-less sudo, neither) is exercised without
installing anything.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "system-packages"


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def _run(tmp_path: Path, *, installed: set[str], uid: int, sudo: bool | None,
         packages: tuple[str, ...] = ("dcmtk", "dicom3tools")) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    listed = " ".join(sorted(installed))
    # dpkg-query -W -f=${Status} PACKAGE: $3 is the package
    _tool(bin_dir, "dpkg-query", f'for p in {listed}; do [ "$p" = "$3" ] && '
          'printf "install ok installed" && exit 0; done; exit 1')
    _tool(bin_dir, "id", f"echo {uid}")
    _tool(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}')
    if sudo is not None:
        _tool(bin_dir, "sudo", f'[ "$1" = "-n" ] && [ "$2" = "true" ] && exit {0 if sudo else 1}; '
              f'echo "sudo $*" >> {calls}')
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    if sudo is None:  # no sudo on this machine: hide the real one too
        env["PATH"] = f"{bin_dir}:{_without_sudo(tmp_path)}"
    return subprocess.run(["sh", str(SCRIPT), *packages], env=env, capture_output=True,
                          text=True, timeout=30)


def _without_sudo(tmp_path: Path) -> str:
    """A folder with the basic tools the script uses and no sudo."""
    folder = tmp_path / "basic"
    folder.mkdir(exist_ok=True)
    for tool in ("grep", "sh", "cat", "printf", "echo", "true"):
        for root in ("/usr/bin", "/bin"):
            source = Path(root) / tool
            if source.exists() and not (folder / tool).exists():
                os.symlink(source, folder / tool)
    return str(folder)


def _calls(tmp_path: Path) -> list[str]:
    calls = tmp_path / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


def test_nothing_happens_when_every_package_is_installed(tmp_path: Path) -> None:
    done = _run(tmp_path, installed={"dcmtk", "dicom3tools"}, uid=1000, sudo=None)
    assert done.returncode == 0, done.stderr
    assert done.stdout == done.stderr == ""
    assert _calls(tmp_path) == []


def test_root_installs_only_what_is_missing(tmp_path: Path) -> None:
    done = _run(tmp_path, installed={"dcmtk"}, uid=0, sudo=None)
    assert done.returncode == 0, done.stderr
    calls = _calls(tmp_path)
    assert calls[0] == "apt-get update -qq"
    assert calls[1].startswith("apt-get install -y")
    assert calls[1].split()[-1] == "dicom3tools" and "dcmtk" not in calls[1]


def test_password_less_sudo_installs_through_sudo(tmp_path: Path) -> None:
    done = _run(tmp_path, installed=set(), uid=1000, sudo=True)
    assert done.returncode == 0, done.stderr
    calls = _calls(tmp_path)
    assert calls[0] == "sudo apt-get update -qq"
    assert calls[1].startswith("sudo apt-get install -y") and calls[1].endswith("dcmtk dicom3tools")


@pytest.mark.parametrize("sudo", [False, None], ids=["sudo-asks-a-password", "no-sudo"])
def test_otherwise_it_stops_at_once_with_the_line_to_run(tmp_path: Path, sudo: bool | None) -> None:
    done = _run(tmp_path, installed={"dicom3tools"}, uid=1000, sudo=sudo)
    assert done.returncode == 1
    assert "sudo apt-get install -y --no-install-recommends dcmtk" in done.stderr
    assert _calls(tmp_path) == []
