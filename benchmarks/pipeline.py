"""Speed of the pipeline: ingest against DCMTK's storescp, and end to end with 1 and 2
worker processes.

    python -m benchmarks.pipeline [--files 1000] [--corpus benchmarks/corpus]

Needs the machine's PostgreSQL (``BENCH_DATABASE_URL``, default the local server) and
RabbitMQ (``BENCH_AMQP_URL``); the S3 server is moto's, started here (or
``BENCH_S3_ENDPOINT``). Every run uses a fresh database, queue prefix and buckets.

1. Ingest: the same 1,000 small CT files sent by ``/usr/bin/storescu`` over one
   association to ``/usr/bin/storescp`` (writing to disk) and to scp-ingest (stored in
   S3, announced on RabbitMQ, recorded in PostgreSQL), no worker running.
2. End to end: from the first C-STORE to the last object de-identified (its instance
   recorded in the index), the files sent over four associations at once, with one and
   with two anonymizer-worker processes (four concurrent objects each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from benchmarks import scale
from benchmarks.corpus import CorpusSpec, build_corpus

STORESCU, STORESCP = "/usr/bin/storescu", "/usr/bin/storescp"
SENDERS = 4
LOCAL_DB = "postgresql://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def send(folder: Path, port: int, aet: str) -> float:
    started = time.perf_counter()
    subprocess.run([STORESCU, "-aec", aet, "+sd", "+sp", "*.dcm", "127.0.0.1", str(port),
                    str(folder)], check=True, env={**os.environ, "TCP_NODELAY": "1"},
                   capture_output=True)
    return time.perf_counter() - started


def storescp_seconds(folder: Path) -> float:
    out = Path(tempfile.mkdtemp(prefix="storescp-"))
    port = free_port()
    server = subprocess.Popen([STORESCP, "-aet", "STORESCP", "-od", str(out), str(port)],
                              env={**os.environ, "TCP_NODELAY": "1"})
    try:
        time.sleep(0.5)
        return send(folder, port, "STORESCP")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(out)


async def _sql(url: str, statement: str) -> object:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


@contextmanager
def deployment(admin_url: str, amqp_url: str, s3: dict[str, str]) -> Iterator[dict[str, str]]:
    """Environment of a fresh deployment (database, queues, buckets)."""
    tag = uuid.uuid4().hex[:8]
    name = f"bench_{tag}"
    asyncio.run(_sql(admin_url, f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    env = {**os.environ, "DATABASE_URL": f"{base}/{name}", "AMQP_URL": amqp_url,
           "QUEUE_PREFIX": f"bench{tag}-", **s3,
           "BUCKET_INCOMING": f"in-{tag}", "BUCKET_DEIDENTIFIED": f"deid-{tag}",
           "BUCKET_QUARANTINE": f"quar-{tag}", "BUCKET_EXPORTS": f"exp-{tag}",
           "SCP_HOST": "127.0.0.1", "SCP_PORT": str(free_port()), "HEALTH_HOST": "127.0.0.1",
           "LOG_LEVEL": "WARNING", "WORKER_CONCURRENCY": "4"}
    subprocess.run([sys.executable, "-m", "services.cli", "migrate"], env=env, check=True,
                   capture_output=True)
    try:
        yield env
    finally:
        asyncio.run(_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

        async def drop_queues() -> None:
            from shared.messaging import RabbitBroker
            from shared.messaging.topology import Topology

            broker = RabbitBroker(amqp_url, Topology(env["QUEUE_PREFIX"]))
            await broker.connect()
            await broker.delete_topology()
            await broker.close()

        asyncio.run(drop_queues())


def start(service: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    health = free_port()
    process = subprocess.Popen([sys.executable, "-m", f"services.{service}"],
                               env={**env, "HEALTH_PORT": str(health)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=2):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{service} did not become ready")


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=30)


def wait_for_instances(url: str, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while asyncio.run(_sql(url, "SELECT count(*) FROM instance")) != count:
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the workers")
        time.sleep(0.05)


def ingest_seconds(folder: Path, env: dict[str, str]) -> float:
    scp = start("scp_ingest", env)
    try:
        return send(folder, int(env["SCP_PORT"]), "ANONSCP")
    finally:
        stop([scp])


def end_to_end_seconds(
    folders: list[Path], count: int, env: dict[str, str], workers: int
) -> float:
    """Send over several associations at once, so that the workers, not one sender,
    set the pace."""
    processes = [start("scp_ingest", env)]
    processes += [start("anonymizer_worker", env) for _ in range(workers)]
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(len(folders)) as pool:
            list(pool.map(lambda f: send(f, int(env["SCP_PORT"]), "ANONSCP"), folders))
        wait_for_instances(env["DATABASE_URL"], count)
        return time.perf_counter() - started
    finally:
        stop(processes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=scale.size(1000, 20))
    parser.add_argument("--corpus", type=Path, default=scale.corpus("benchmarks/corpus"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    corpus = build_corpus(args.corpus / "small", CorpusSpec("small", scale.size(2000, 20), 64))
    folder = Path(tempfile.mkdtemp(prefix="bench-send-"))
    parts = [folder / f"part{n}" for n in range(SENDERS)]
    for part in parts:
        part.mkdir()
    for n, path in enumerate(sorted(corpus.path.glob("*.dcm"))[: args.files]):
        (folder / path.name).symlink_to(path.resolve())
        (parts[n % SENDERS] / path.name).symlink_to(path.resolve())
    admin = os.environ.get("BENCH_DATABASE_URL", LOCAL_DB)
    amqp = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    moto = None
    if os.environ.get("BENCH_S3_ENDPOINT"):
        s3 = {"S3_ENDPOINT": os.environ["BENCH_S3_ENDPOINT"],
              "S3_ACCESS_KEY": os.environ.get("BENCH_S3_ACCESS_KEY", ""),
              "S3_SECRET_KEY": os.environ.get("BENCH_S3_SECRET_KEY", "")}
    else:
        from moto.server import ThreadedMotoServer

        port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        moto.start()
        s3 = {"S3_ENDPOINT": f"127.0.0.1:{port}", "S3_ACCESS_KEY": "bench",
              "S3_SECRET_KEY": "benchbench"}
    try:
        reference = storescp_seconds(folder)
        with deployment(admin, amqp, s3) as env:
            ours = ingest_seconds(folder, env)
        results: dict[str, float] = {
            "files": args.files, "storescp_s": round(reference, 3),
            "scp_ingest_s": round(ours, 3), "ingest_ratio": round(reference / ours, 2),
        }
        for workers in (1, 2):
            with deployment(admin, amqp, s3) as env:
                seconds = end_to_end_seconds(parts, args.files, env, workers)
            results[f"end_to_end_{workers}_worker_files_per_s"] = round(args.files / seconds, 1)
        results["speedup_2_vs_1"] = round(results["end_to_end_2_worker_files_per_s"]
                                          / results["end_to_end_1_worker_files_per_s"], 2)
    finally:
        if moto is not None:
            moto.stop()
        shutil.rmtree(folder)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
