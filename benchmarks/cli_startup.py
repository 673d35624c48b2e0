"""Whole-command times of ``anon`` as a user sees them, start-up included
(``python -m benchmarks.cli_startup [--repeat 5] [--corpus benchmarks/corpus/rt]``).

- ``anon --help``: the interpreter, the parser of every command, the help text.
- ``anon rt-batch`` of one 200-slice RT set (the set of ``benchmarks.rt_batch``: 200 CT
  slices of 512x512, an RTSTRUCT of 20 ROIs, an RTPLAN, an RTDOSE), each run into a fresh
  output folder, in three states of the data folder:
  - *cold*: a new data folder (the embedded PostgreSQL is created and migrated);
  - *existing, stopped*: the data folder exists, its server is not running (it is started
    and stopped by the command: ``EMBEDDED_DATABASE_LINGER_SECONDS=0``);
  - *existing, running*: the server is still running from the previous command (the
    default: it lingers after a command).
Each figure is the median of ``--repeat`` runs (cold: of fresh folders), after one warm-up
run that fills the file cache. ``--anon`` times another installation's ``anon`` (for example
one installed without the development extras, whose numpy and requests pydicom imports
when it finds them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import scale
from benchmarks.rt_batch import build_set

ANON = Path(sys.executable).with_name("anon")


def _env(linger: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["EMBEDDED_DATABASE_LINGER_SECONDS"] = linger
    return env


def _timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:2])} failed: {done.stderr[-500:]}")
    return elapsed


def _stop_server(data_dir: Path) -> None:
    """Stop a lingering server of ``data_dir`` (its watcher then ends by itself)."""
    from shared.index.embedded import stop

    stop(data_dir / "postgres")


def _median(runs: int, one: Callable[[], float]) -> float:
    one()  # warm-up
    return statistics.median(one() for _ in range(runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=scale.size(5, 1))
    parser.add_argument("--corpus", type=Path, default=scale.corpus("benchmarks/corpus/rt"))
    parser.add_argument("--anon", type=Path, default=ANON, help="the anon command to time")
    args = parser.parse_args(argv)
    anon = str(args.anon)

    help_seconds = _median(args.repeat, lambda: _timed([anon, "--help"], os.environ.copy()))

    root, generated = build_set(args.corpus)
    if generated:
        print(f"generated the RT set in {generated:.1f} s")
    scratch = Path(tempfile.mkdtemp(prefix="bench-cli-", dir="/tmp"))
    figures: dict[str, float] = {}
    try:
        def batch(data_dir: Path, linger: str) -> float:
            out = Path(tempfile.mkdtemp(dir=scratch))
            try:
                return _timed([anon, "rt-batch", str(root), "--out", str(out),
                               "--data-dir", str(data_dir), "--no-progress"], _env(linger))
            finally:
                shutil.rmtree(out)

        def cold() -> float:
            data_dir = Path(tempfile.mkdtemp(dir=scratch))
            try:
                return batch(data_dir, "0")
            finally:
                shutil.rmtree(data_dir)

        existing = Path(tempfile.mkdtemp(dir=scratch))
        figures["cold: a new data folder"] = _median(args.repeat, cold)
        figures["existing data folder, server stopped"] = _median(
            args.repeat, lambda: batch(existing, "0"))
        figures["existing data folder, server running"] = _median(
            args.repeat, lambda: batch(existing, "60"))
        _stop_server(existing)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"anon --help: {help_seconds:.2f} s (median of {args.repeat}; target < 0.3 s)")
    print(f"anon rt-batch, one set of {sum(1 for p in root.rglob('*.dcm'))} objects "
          f"(median of {args.repeat}; target < 1.0 s on an existing data folder):")
    for name, seconds in figures.items():
        print(f"  {name + ':':<40}{seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
