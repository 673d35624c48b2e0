"""Speed of an export: 1,000 small de-identified objects to DCMTK's storescp, against a
bare pynetdicom loop and DCMTK's storescu sending the same files in the same run.

    python -m benchmarks.export [--files 1000] [--repeat 3]

Setup (not timed): an ``anon serve`` (embedded objects and queues, the index on the
machine's PostgreSQL, ``BENCH_DATABASE_URL``, a fresh database) receives the corpus of
``benchmarks.corpus`` (1,000 small CT files of 10 studies and 4 patients) and
de-identifies it. Then, per repeat, each sender delivers the de-identified files to
``/usr/bin/storescp`` (writing to disk, ``TCP_NODELAY=1``):

- ``exporter``: ``anon export --all-pending --now --force --wait`` as a user types it
  (start-up, the command, the job: read each object from the store, send it, record it),
  and the job alone (from its start to its end, as the index records them);
- ``pynetdicom loop``: one association, ``send_c_store`` of each file path, nothing else;
- ``storescu``: ``/usr/bin/storescu`` with every file over one association.

The exporter's figures are given as a ratio to the pynetdicom loop (the target: at least
0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from pydicom import dcmread
from pynetdicom import AE, evt

from benchmarks import scale
from benchmarks.corpus import CorpusSpec, build_corpus
from benchmarks.retrieve import LOCAL_DB, database, free_port, serve, summarize
from shared.dimse.association import set_nodelay

STORESCP, STORESCU = "/usr/bin/storescp", "/usr/bin/storescu"


def bare_loop(files: list[Path], port: int) -> float:
    """A minimal pynetdicom sender: the contexts the files need, one association."""
    pairs = sorted({(str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID))
                    for h in (dcmread(f, stop_before_pixels=True) for f in files)})
    ae = AE(ae_title="BARELOOP")
    for sop, syntax in pairs:
        ae.add_requested_context(sop, [syntax])
    started = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title="STORESCP",
                         evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])
    if not assoc.is_established:
        raise RuntimeError("no association with storescp")
    for path in files:
        status = assoc.send_c_store(path)
        if getattr(status, "Status", -1) != 0:
            raise RuntimeError("storescp refused an object")
    assoc.release()
    return time.perf_counter() - started


def storescu(folder: Path, port: int) -> float:
    started = time.perf_counter()
    subprocess.run([STORESCU, "-aec", "STORESCP", "+sd", "+r", "+sp", "*.dcm", "127.0.0.1",
                    str(port), str(folder)], check=True, capture_output=True,
                   env={**os.environ, "TCP_NODELAY": "1"})
    return time.perf_counter() - started


def job_seconds(database_url: str) -> float:
    """Start to end of the newest export job, as the index recorded them."""
    async def fetch() -> float:
        connection = await asyncpg.connect(database_url)
        try:
            row = await connection.fetchrow(
                "SELECT status, extract(epoch FROM finished_at - created_at) AS seconds"
                " FROM job WHERE kind = 'export' ORDER BY id DESC LIMIT 1")
        finally:
            await connection.close()
        if row is None or row["status"] != "complete":
            raise RuntimeError("the export job did not complete")
        return float(row["seconds"])

    return asyncio.run(fetch())


def count_instances(database_url: str) -> int:
    async def fetch() -> int:
        connection = await asyncpg.connect(database_url)
        try:
            return int(await connection.fetchval(
                "SELECT count(*) FROM instance WHERE object_key IS NOT NULL"))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=scale.size(1000, 20))
    parser.add_argument("--repeat", type=int, default=scale.size(3, 1))
    parser.add_argument("--corpus", type=Path, default=scale.corpus("benchmarks/corpus/export"))
    args = parser.parse_args(argv)
    admin_url = os.environ.get("BENCH_DATABASE_URL", LOCAL_DB)
    corpus = build_corpus(args.corpus, CorpusSpec("export", args.files, 64)).path
    scratch = Path(tempfile.mkdtemp(prefix="bench-export-", dir="/tmp"))
    port, scp_port = free_port(), free_port()
    received = scratch / "storescp"
    received.mkdir()
    receiver = subprocess.Popen(
        [STORESCP, "-od", str(received), "-aet", "STORESCP", str(port)],
        env={**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    figures: dict[str, list[float]] = {"exporter command": [], "exporter job": [],
                                       "pynetdicom loop": [], "storescu": []}
    try:
        with database(admin_url) as url, serve(
                scratch, url, None, scp_port,
                EXPORT_HOST="127.0.0.1", EXPORT_PORT=str(port),
                EXPORT_CALLED_AE="STORESCP") as (data, env):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "services.cli", "import", str(corpus),
                            "--port", str(scp_port), "--no-progress"], env=env, check=True,
                           capture_output=True)
            while count_instances(url) < args.files:
                time.sleep(0.2)
            print(f"{args.files} objects received and de-identified in "
                  f"{time.perf_counter() - started:.1f} s (setup)")
            files = sorted((data / "objects" / "deidentified").rglob("*.dcm"))
            folder = scratch / "deidentified"
            shutil.copytree(data / "objects" / "deidentified", folder)
            for _ in range(args.repeat):
                for sender in ("exporter", "pynetdicom loop", "storescu"):
                    for path in received.iterdir():
                        path.unlink()
                    if sender == "exporter":
                        started = time.perf_counter()
                        subprocess.run(
                            [sys.executable, "-m", "services.cli", "export", "--all-pending",
                             "--now", "--force", "--wait", "--no-progress", "--data-dir",
                             str(data)], env=env, check=True, capture_output=True)
                        figures["exporter command"].append(time.perf_counter() - started)
                        figures["exporter job"].append(job_seconds(url))
                    elif sender == "pynetdicom loop":
                        figures[sender].append(bare_loop(files, port))
                    else:
                        figures[sender].append(storescu(folder, port))
                    arrived = len(list(received.iterdir()))
                    if arrived != len(files):
                        raise RuntimeError(f"{sender}: {arrived} of {len(files)} arrived")
    finally:
        receiver.terminate()
        receiver.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    report = summarize(figures, "pynetdicom loop", args.files, "objects")
    print(json.dumps({"files": args.files, "figures": report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
