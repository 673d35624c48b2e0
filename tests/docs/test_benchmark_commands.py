"""The benchmark commands the documents show, run as written at smoke size.

Each runs in a workspace like the repository's root (its own ``benchmarks/corpus``, so no
generated data lands in the repository) with ``BENCHMARK_SMOKE=1``, which shrinks the
generated data and the repeats to what proves the command works (``benchmarks/scale.py``).
The figures are not checked: benchmarks are not tests; they must run and print them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.commands import ROOT, reader_env, run, shown_commands
from tests.docs.test_commands import BENCHMARKS, RUN_ELSEWHERE

pytestmark = pytest.mark.integration

# What each command prints when it got to its figures.
PRINTS = {
    ".venv/bin/python -m benchmarks.deidentify": ["inner_warm"],
    ".venv/bin/python -m benchmarks.rt_batch": ["median:"],
    ".venv/bin/python -m benchmarks.relinker": ["struct first: ratio", "store reads per arrival"],
    ".venv/bin/python -m benchmarks.pipeline": ["end_to_end"],
    ".venv/bin/python -m benchmarks.ingest": ["x storescp:", "journal relayed"],
    ".venv/bin/python -m benchmarks.capacity": ["database connections"],
    ".venv/bin/python -m benchmarks.scale_workers": ["local_per_core_ratio_2_vs_1:"],
    ".venv/bin/python -m benchmarks.memory": ["peak"],
    ".venv/bin/python -m benchmarks.cli_startup": ["anon --help:", "server running:"],
    ".venv/bin/python -m benchmarks.retrieve": ["storescp: median", "anon retrieve --wait:"],
    ".venv/bin/python -m benchmarks.export": ["exporter job: median", "pynetdicom loop:"],
    ".venv/bin/python -m benchmarks.index_api": ["lookups/s", "audit one record per lookup: True"],
}
COMMANDS = sorted(command for command, where in RUN_ELSEWHERE.items() if where == BENCHMARKS)


@pytest.fixture(scope="module")
def bench_workspace() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="bench-docs-"))
    try:
        for name in ("Makefile", "pyproject.toml", "scripts", ".venv", "tests"):
            (folder / name).symlink_to(ROOT / name)
        (folder / "benchmarks").mkdir()
        for module in (ROOT / "benchmarks").glob("*.py"):
            (folder / "benchmarks" / module.name).symlink_to(module)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_every_benchmark_command_is_checked_here() -> None:
    shown = {s.command for s in shown_commands()}
    assert set(COMMANDS) <= shown
    assert set(COMMANDS) - {"make bench"} == set(PRINTS), (
        "give each benchmark command what it prints")


def test_make_bench_runs_benchmarks_each_run_here() -> None:
    """``make bench`` is the benchmarks it names, one after the other; each of them is run
    by :func:`test_benchmark_command_runs`, so running them again through make would only
    take the time twice."""
    env = reader_env()
    planned = subprocess.run(["make", "-n", "bench"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout.splitlines()
    benchmarks = [line for line in planned if " -m benchmarks." in line]
    assert benchmarks, planned
    assert all(line in COMMANDS for line in benchmarks), (benchmarks, COMMANDS)
    # Besides them, only the compilation of the project's modules (make bytecode).
    others = [line for line in planned
              if line.startswith(".venv/bin/python") and line not in benchmarks]
    assert all("compileall" in line for line in others), others


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "make bench"])
def test_benchmark_command_runs(command: str, bench_workspace: Path) -> None:
    env = reader_env(BENCHMARK_SMOKE="1")
    del env["SITE_ID"]  # the benchmarks' indexes are their own, with sites of their own
    done = run(command, bench_workspace, env, timeout=300)
    for expected in PRINTS[command]:
        assert expected in done.stdout, f"{command!r} printed no {expected!r}:\n{done.stdout}"
