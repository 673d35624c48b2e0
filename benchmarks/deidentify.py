"""Speed of ``anon deidentify`` against GDCM's ``gdcmanon``, a bare pydicom loop and ``cp``.

    python -m benchmarks.deidentify [--corpus benchmarks/corpus] [--repeat 3]
                                    [--server URL] [--command-jobs 1,2] [--json FILE]
                                    [--small 2000] [--large 500]

Every measurement reads every file of a generated corpus and writes one output file per
input on the same disk.

- **gdcmanon** (C++, Debian's ``libgdcm-tools``), the whole corpus folder in one process:
  ``gdcmanon --dumb --empty 10,10 --empty 10,20 --remove 10,30 --continue -i CORPUS -o
  OUT`` (dumb mode: empty Patient's Name and Patient ID, remove Patient's Birth Date, keep
  the rest, UIDs included; its basic profile needs an X.509 certificate to encrypt the
  originals). Skipped, with a line saying so, when ``gdcmanon`` is not on PATH.
- **cp**: ``cp -r CORPUS OUT``, the floor of reading and writing the same bytes.
- **bare pydicom**: read, change PatientName, write; nothing else, in this process
  (pydicom already imported).
- **bare pydicom script**: the same loop over the corpus folder as a ``python -c``
  subprocess, timed like the whole command: interpreter start and pydicom's import
  included, what a user running such a script waits for.
- **inner loop**: in this process, the path ``anon deidentify --jobs 1`` runs per file
  (validate, look up the patient in the PHI index, apply the full profile, write into the
  output tree, record the instance), start-up excluded, fed in the command's chunks of
  16 files (one run of the worker's event loop per chunk). *Warm*: one index for every run,
  so every patient and study is cached after the warm-up run. *Cold*: a fresh database
  per timed run (created and migrated before the clock starts) and a new connection, so
  every patient and study is allocated and written during the run.
- **whole command**: ``anon deidentify CORPUS --out DIR`` as a subprocess, wall clock from
  start to exit: interpreter and imports, migrations, the scan that numbers patients, the
  worker processes, the summary. *Cold*: a fresh, empty database per run (the command
  creates its tables). *Warm*: a database that already holds the corpus's patients and
  studies from a previous run. *New data folder*: no ``DATABASE_URL``, a new
  ``--data-dir`` per run, so the command also creates and starts its embedded PostgreSQL
  (what a first run on a new machine costs).

Fresh databases are created on the PostgreSQL server of ``--server`` (default
``TEST_DATABASE_URL``, else ``DATABASE_URL``), else on an embedded server started in a
temporary folder for the benchmark, and dropped afterwards. Figures are the median of
``--repeat`` runs, after a warm-up run that fills the operating system's file cache.
Ratios follow each corpus: the inner loop's and the whole command's speed over
gdcmanon's, and the whole command's over the bare pydicom loop's (in this process and as a
script).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pydicom

from benchmarks import scale
from benchmarks.corpus import CorpusSpec, build_corpus
from shared.batch.deidentify import CHUNK, FileWorker, JobSettings, prepare_index
from shared.deid.options import ProfileOptions

CORPORA = (CorpusSpec("small", scale.size(2000, 20), 64),
           CorpusSpec("large", scale.size(500, 4), 512))
ANON = Path(sys.executable).with_name("anon")


def bare_pydicom(files: list[Path], out: Path) -> None:
    for n, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.PatientName = "ANONYMOUS"
        ds.save_as(out / f"{n}.dcm")


# The bare loop as a script: the corpus folder and the output folder are its arguments.
BARE_SCRIPT = """
import sys
from pathlib import Path
import pydicom
out = Path(sys.argv[2])
for n, path in enumerate(sorted(Path(sys.argv[1]).glob("*.dcm"))):
    ds = pydicom.dcmread(path)
    ds.PatientName = "ANONYMOUS"
    ds.save_as(out / f"{n}.dcm")
"""


def bare_pydicom_script(corpus: Path, out: Path) -> None:
    subprocess.run([sys.executable, "-c", BARE_SCRIPT, str(corpus), str(out)], check=True)


def gdcmanon(corpus: Path, out: Path) -> None:
    """GDCM's anonymizer over the whole folder (see the module docstring)."""
    completed = subprocess.run(
        ["gdcmanon", "--dumb", "--empty", "10,10", "--empty", "10,20", "--remove", "10,30",
         "--continue", "-i", str(corpus), "-o", str(out)],
        capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"gdcmanon failed ({completed.returncode}): {completed.stderr[-2000:]}")


def copy_tree(corpus: Path, out: Path) -> None:
    """``cp -r``: the same bytes read and written, nothing parsed."""
    subprocess.run(["cp", "-r", str(corpus), str(out / "copy")], check=True)


def _on_folder(run: Callable[[Path, Path], None],
               folder: Path) -> Callable[[list[Path], Path], None]:
    """A folder-wide tool timed like the per-file loops (it reads the folder, not the list)."""
    return lambda _files, out: run(folder, out)


def run_worker(worker: FileWorker, files: list[Path], out: Path) -> None:
    """The files in chunks of ``CHUNK``, as ``anon deidentify --jobs 1`` sends them."""
    worker.settings = dataclasses.replace(worker.settings, out=out)
    items = [(n, str(path)) for n, path in enumerate(files)]
    for start in range(0, len(items), CHUNK):
        for result in worker.process_chunk(items[start : start + CHUNK]):
            if result.code:
                raise RuntimeError(f"{Path(result.source).name} rejected: {result.reason}")
    worker.flush()


def timed(run: Callable[[list[Path], Path], None], files: list[Path], repeat: int,
          warm_up: bool = True) -> float:
    samples = []
    for attempt in range(repeat + (1 if warm_up else 0)):
        out = Path(tempfile.mkdtemp(prefix="bench-out-"))
        try:
            start = time.perf_counter()
            run(files, out)
            elapsed = time.perf_counter() - start
        finally:
            shutil.rmtree(out)
        if attempt or not warm_up:  # the first run warms the file cache
            samples.append(elapsed)
    return statistics.median(samples)


# --- databases ---------------------------------------------------------------------------


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


class Databases:
    """Fresh databases on one PostgreSQL server, dropped when the benchmark ends."""

    def __init__(self, server_url: str | None) -> None:
        self._embedded = None
        if server_url is None:
            import pgserver

            folder = Path(tempfile.mkdtemp(prefix="bench-pg-", dir="/tmp"))
            self._embedded = pgserver.get_server(folder, cleanup_mode="delete")
            server_url = str(self._embedded.get_uri())
        self.server_url = server_url
        self.created: list[str] = []

    async def _execute(self, sql: str) -> None:
        connection = await asyncpg.connect(self.server_url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    def fresh(self) -> str:
        """The URL of a new, empty database."""
        name = f"bench_{uuid.uuid4().hex[:12]}"
        asyncio.run(self._execute(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return _with_database(self.server_url, name)

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        asyncio.run(self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.remove(name)

    def close(self) -> None:
        for name in list(self.created):
            with contextlib.suppress(Exception):
                asyncio.run(self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if self._embedded is not None:
            self._embedded.cleanup()


@contextlib.contextmanager
def fresh_database(databases: Databases) -> Iterator[str]:
    url = databases.fresh()
    try:
        yield url
    finally:
        databases.drop(url)


# --- measurements ------------------------------------------------------------------------


def inner_cold(databases: Databases, files: list[Path], repeat: int) -> float:
    """The inner loop with an empty index: a fresh database and a new worker per run."""
    samples = []
    for _ in range(repeat):
        with fresh_database(databases) as url:
            scratch = Path(tempfile.mkdtemp(prefix="bench-index-"))
            out = scratch / "out"
            try:
                asyncio.run(prepare_index(scratch, url, None))
                worker = FileWorker(JobSettings(url, ProfileOptions.ricord(), out))
                try:
                    start = time.perf_counter()
                    run_worker(worker, files, out)
                    samples.append(time.perf_counter() - start)
                finally:
                    worker.close()
            finally:
                shutil.rmtree(scratch)
    return statistics.median(samples)


def _command(corpus: Path, scratch: Path, jobs: int, url: str | None) -> float:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if url is not None:
        environment["DATABASE_URL"] = url
    command = [str(ANON), "deidentify", str(corpus), "--out", str(scratch / "out"),
               "--data-dir", str(scratch / "data"), "--jobs", str(jobs), "--no-progress"]
    start = time.perf_counter()
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if completed.returncode != 0 or "rejected:  0" not in completed.stdout:
        raise RuntimeError(f"anon deidentify failed ({completed.returncode}): "
                           f"{completed.stderr[-2000:]}{completed.stdout[-2000:]}")
    return elapsed


def command_cold(databases: Databases, corpus: Path, jobs: int, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        scratch = Path(tempfile.mkdtemp(prefix="bench-cmd-"))
        try:
            with fresh_database(databases) as url:
                samples.append(_command(corpus, scratch, jobs, url))
        finally:
            shutil.rmtree(scratch)
    return statistics.median(samples)


def command_warm(databases: Databases, corpus: Path, jobs: int, repeat: int) -> float:
    samples = []
    with fresh_database(databases) as url:
        for attempt in range(repeat + 1):
            scratch = Path(tempfile.mkdtemp(prefix="bench-cmd-"))
            try:
                elapsed = _command(corpus, scratch, jobs, url)
            finally:
                shutil.rmtree(scratch)
            if attempt:  # the first run fills the index
                samples.append(elapsed)
    return statistics.median(samples)


def command_new_data_folder(corpus: Path, jobs: int, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        # The embedded PostgreSQL keeps its socket in the data folder: keep the path short.
        scratch = Path(tempfile.mkdtemp(prefix="bc-", dir="/tmp"))
        try:
            samples.append(_command(corpus, scratch, jobs, None))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return statistics.median(samples)


def _figure(count: int, seconds: float) -> dict[str, float]:
    return {"seconds": round(seconds, 3), "files_per_s": round(count / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=scale.corpus("benchmarks/corpus"))
    parser.add_argument("--repeat", type=int, default=scale.size(3, 1))
    parser.add_argument("--server", help="PostgreSQL server for the fresh databases "
                        "(default TEST_DATABASE_URL, DATABASE_URL, else an embedded one)")
    parser.add_argument("--command-jobs", default="1,2",
                        help="--jobs values for the whole command (comma-separated)")
    parser.add_argument("--small", type=int, default=CORPORA[0].count,
                        help="number of 64x64 files")
    parser.add_argument("--large", type=int, default=CORPORA[1].count,
                        help="number of 512x512 files")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    corpora = [dataclasses.replace(CORPORA[0], count=args.small),
               dataclasses.replace(CORPORA[1], count=args.large)]
    jobs_values = [int(j) for j in args.command_jobs.split(",") if j.strip()]

    server = args.server or os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    databases = Databases(server)
    results = []
    try:
        warm_url = databases.fresh()
        scratch = Path(tempfile.mkdtemp(prefix="bench-index-"))
        asyncio.run(prepare_index(scratch, warm_url, None))
        worker = FileWorker(JobSettings(warm_url, ProfileOptions.ricord(), scratch / "out"))
        try:
            for spec in corpora:
                if spec.count == 0:
                    continue
                corpus = build_corpus(args.corpus / spec.name, spec)
                files = sorted(corpus.path.glob("*.dcm"))
                n = len(files)
                row: dict[str, object] = {"corpus": f"{n} CT {spec.size}x{spec.size}"}
                if shutil.which("gdcmanon"):
                    row["gdcmanon"] = _figure(n, timed(
                        _on_folder(gdcmanon, corpus.path), files, args.repeat))
                else:
                    print("gdcmanon not found (Debian package libgdcm-tools): skipped")
                row["cp"] = _figure(n, timed(
                    _on_folder(copy_tree, corpus.path), files, args.repeat))
                row["bare_pydicom"] = _figure(n, timed(bare_pydicom, files, args.repeat))
                row["bare_pydicom_script"] = _figure(n, timed(
                    _on_folder(bare_pydicom_script, corpus.path), files, args.repeat))
                row["inner_warm"] = _figure(n, timed(
                    lambda f, o: run_worker(worker, f, o), files, args.repeat))
                row["inner_cold"] = _figure(n, inner_cold(databases, files, args.repeat))
                for jobs in jobs_values:
                    row[f"command_cold_jobs{jobs}"] = _figure(
                        n, command_cold(databases, corpus.path, jobs, args.repeat))
                    row[f"command_warm_jobs{jobs}"] = _figure(
                        n, command_warm(databases, corpus.path, jobs, args.repeat))
                row[f"command_new_data_folder_jobs{jobs_values[-1]}"] = _figure(
                    n, command_new_data_folder(corpus.path, jobs_values[-1], args.repeat))
                row["ratios"] = _ratios(row, jobs_values)
                results.append(row)
                _print_row(row)
        finally:
            worker.close()
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        databases.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _ratios(row: dict[str, object], jobs_values: list[int]) -> dict[str, float]:
    """Speed of ours over gdcmanon's (target 0.7 on 512x512, 0.5 on 64x64) and of the whole
    command over the bare pydicom loop's (target 1.0), in this process and as a script."""
    def speed(key: str) -> float:
        figure = row.get(key)
        return float(figure["files_per_s"]) if isinstance(figure, dict) else 0.0

    ratios: dict[str, float] = {}
    ours = ["inner_warm", "inner_cold"]
    ours += [f"command_{state}_jobs{jobs}" for jobs in jobs_values for state in ("warm", "cold")]
    for key in ours:
        if speed("gdcmanon"):
            ratios[f"{key}/gdcmanon"] = round(speed(key) / speed("gdcmanon"), 2)
        if key.startswith("command"):
            for bare in ("bare_pydicom", "bare_pydicom_script"):
                ratios[f"{key}/{bare}"] = round(speed(key) / speed(bare), 2)
    return ratios


def _print_row(row: dict[str, object]) -> None:
    print(row["corpus"])
    for key, value in row.items():
        if key == "ratios" and isinstance(value, dict):
            for name, ratio in value.items():
                print(f"  {name:<50}{ratio:>6.2f}")
        elif isinstance(value, dict):
            print(f"  {key:<34}{value['seconds']:>9.3f} s{value['files_per_s']:>10.1f} files/s")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
