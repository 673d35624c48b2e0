"""Speed of a retrieve: one study of 1,000 small CT instances from Orthanc, into the
pipeline, against Orthanc's C-MOVE of the same study to DCMTK's storescp in the same run.

    python -m benchmarks.retrieve [--instances 1000] [--repeat 3]

Orthanc (Debian's, ``TCP_NODELAY=1``) holds the study and knows two destinations:
``/usr/bin/storescp`` writing to disk, and the Storage SCP of an ``anon serve`` (embedded
objects and queues; the index on the machine's PostgreSQL, ``BENCH_DATABASE_URL``, a fresh
database each run). Per repeat:

1. ``storescp``: a study-level C-MOVE to storescp (our pynetdicom SCU asks; Orthanc sends);
2. ``move into serve``: the same C-MOVE to a fresh ``anon serve``'s SCP, no job: what
   receiving costs (store, announce, record);
3. ``anon retrieve --wait``: the whole command, start-up included, on another fresh
   ``anon serve``: find the study, ask what the PACS holds, move, verify every instance;
   and, apart, until the last instance is de-identified.

The figures are medians; the ratios are against storescp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from benchmarks import scale
from shared.dimse.peer import Peer
from shared.dimse.retrieve import move
from tests import synth
from tests.orthanc import Orthanc

STORESCP = "/usr/bin/storescp"
LOCAL_DB = "postgresql://postgres@127.0.0.1:5432/test"
STUDY_UID = "1.2.826.0.1.3680043.10.543.99.1"
PER_SERIES = 100


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_study(folder: Path, count: int) -> Path:
    """``count`` 64x64 CT instances of one study, in series of 100 (reused if present)."""
    if folder.is_dir() and len(list(folder.glob("*.dcm"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    written, number = 0, 1
    while written < count:
        n = min(PER_SERIES, count - written)
        for i, ds in enumerate(synth.make_ct_series(n, study_uid=STUDY_UID,
                                                    series_number=number)):
            synth.write(ds, folder / f"s{number:03d}_{i:04d}.dcm")
        written += n
        number += 1
    return folder


@contextmanager
def database(admin_url: str) -> Iterator[str]:
    name = f"bench_retrieve_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(admin_url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def serve(scratch: Path, database_url: str, pacs: Orthanc | None, scp_port: int,
          **settings: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh ``anon serve`` on ``scp_port`` (querying ``pacs``, with ``settings``); its
    data folder and environment."""
    data = scratch / f"serve-{uuid.uuid4().hex[:6]}"
    health = free_port()
    env = {**{k: v for k, v in os.environ.items() if k not in ("AMQP_URL", "S3_ENDPOINT")},
           "DATABASE_URL": database_url, "QR_ARRIVAL_WAIT_SECONDS": "5",
           "LOG_LEVEL": "WARNING", **settings}
    if pacs is not None:
        env.update({"PACS_HOST": "127.0.0.1", "PACS_PORT": str(pacs.dicom_port),
                    "PACS_AE_TITLE": pacs.aet})
    log = (scratch / f"{data.name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "--data-dir", str(data), "--port",
         str(scp_port), "--aet", "ANONSCP", "--health-port", str(health)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("anon serve did not start") from None
                time.sleep(0.1)
        yield data, env
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def deidentified(database_url: str) -> int:
    async def count() -> int:
        connection = await asyncpg.connect(database_url)
        try:
            return int(await connection.fetchval("SELECT count(*) FROM instance"))
        finally:
            await connection.close()

    return asyncio.run(count())


def wait_deidentified(database_url: str, count: int, since: float) -> float:
    while deidentified(database_url) < count:
        time.sleep(0.05)
    return time.perf_counter() - since


def timed_move(pacs: Orthanc, destination: str, expected: int) -> float:
    peer = Peer("127.0.0.1", pacs.dicom_port, pacs.aet, "BENCHQR", 60)
    started = time.perf_counter()
    outcome = move(peer, destination, STUDY_UID)
    seconds = time.perf_counter() - started
    if outcome.completed != expected:
        raise RuntimeError(f"{destination}: {outcome.completed} of {expected} sent "
                           f"({outcome.message})")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=scale.size(1000, 20))
    parser.add_argument("--repeat", type=int, default=scale.size(3, 1))
    parser.add_argument("--corpus", type=Path,
                        default=scale.corpus("benchmarks/corpus/retrieve-study"))
    args = parser.parse_args(argv)
    admin_url = os.environ.get("BENCH_DATABASE_URL", LOCAL_DB)
    files = sorted(build_study(args.corpus, args.instances).glob("*.dcm"))
    scratch = Path(tempfile.mkdtemp(prefix="bench-retrieve-", dir="/tmp"))
    storescp_port, scp_port = free_port(), free_port()
    received = scratch / "storescp"
    received.mkdir()
    storescp = subprocess.Popen(
        [STORESCP, "-od", str(received), "-aet", "STORESCP", str(storescp_port)],
        env={**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    pacs = Orthanc(scratch / "pacs", "PACS", modalities={
        "STORESCP": ("127.0.0.1", storescp_port), "ANONSCP": ("127.0.0.1", scp_port)})
    figures: dict[str, list[float]] = {"storescp": [], "move into serve": [],
                                       "anon retrieve --wait": [], "de-identified": []}
    try:
        pacs.start()
        started = time.perf_counter()
        pacs.upload(files)
        print(f"{len(files)} instances loaded into Orthanc in "
              f"{time.perf_counter() - started:.1f} s")
        for _ in range(args.repeat):
            for path in received.iterdir():
                path.unlink()
            figures["storescp"].append(timed_move(pacs, "STORESCP", len(files)))
            with database(admin_url) as url, serve(scratch, url, pacs, scp_port):
                figures["move into serve"].append(timed_move(pacs, "ANONSCP", len(files)))
            with database(admin_url) as url, serve(scratch, url, pacs, scp_port) as (data, env):
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "services.cli", "retrieve", STUDY_UID, "--wait",
                     "--no-progress", "--data-dir", str(data)],
                    env=env, capture_output=True, text=True)
                figures["anon retrieve --wait"].append(time.perf_counter() - started)
                if done.returncode != 0:
                    raise RuntimeError(f"anon retrieve failed: {done.stdout[-500:]}"
                                       f"{done.stderr[-500:]}")
                figures["de-identified"].append(wait_deidentified(url, len(files), started))
    finally:
        pacs.stop(kill=True)
        storescp.terminate()
        storescp.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"instances": len(files),
                      "figures": summarize(figures, "storescp", len(files), "instances")}))
    return 0


def summarize(figures: dict[str, list[float]], baseline: str, count: int,
              unit: str) -> dict[str, dict[str, object]]:
    """Print each figure's median with its rate and its ratio to ``baseline``'s median;
    the same as a JSON-ready report."""
    base = statistics.median(figures[baseline])
    ratio = "x_" + baseline.replace(" ", "_")
    report: dict[str, dict[str, object]] = {}
    for name, runs in figures.items():
        median = statistics.median(runs)
        report[name] = {"median_s": round(median, 3), "runs": [round(r, 3) for r in runs],
                        ratio: round(base / median, 3)}
        print(f"{name}: median {median:.2f} s of {len(runs)} "
              f"({count / median:.0f} {unit}/s; {base / median:.2f} x {baseline})")
    return report


if __name__ == "__main__":
    sys.exit(main())
