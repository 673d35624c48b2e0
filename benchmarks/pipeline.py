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
   with two anonymizer-worker processes (four concurrent objects each) and the
   rt-relinker.
3. CPU per object in the end-to-end runs: user and system seconds (children included)
   that each of our processes (scp-ingest, each anonymizer-worker, rt-relinker) and each
   backing server (RabbitMQ's ``beam.smp``, every ``postgres`` process of the server, the
   moto S3 server, run here as a process of its own) spent from the first C-STORE until
   the relink queue was drained, divided by the files sent; and the same for the engine
   alone: ``benchmarks.deidentify``'s inner loop (validate, look up, de-identify, write,
   record) on the same files in this process, warm index, after a warm-up run. A
   PostgreSQL backend that exits during the run takes its CPU with it, so the figure for
   the server is a lower bound.
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
import psutil

from benchmarks import scale
from benchmarks.corpus import CorpusSpec, build_corpus
from benchmarks.deidentify import run_worker
from shared.batch.deidentify import FileWorker, JobSettings, prepare_index
from shared.deid.options import ProfileOptions

STORESCU, STORESCP = "/usr/bin/storescu", "/usr/bin/storescp"
SENDERS = 4
LOCAL_DB = "postgresql://postgres@127.0.0.1:5432/test"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 free now and not handed out before by this process, drawn
    below the kernel's ephemeral range (where outgoing connections take theirs, so none
    takes it before the server that was given it binds it)."""
    import random
    import socket

    try:
        top = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        top = 32768
    while True:
        port = random.randrange(20000, top) if top > 21000 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


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
    """Environment of a fresh deployment (database, queues, buckets, data folder: the
    SCP's journal among others)."""
    tag = uuid.uuid4().hex[:8]
    name = f"bench_{tag}"
    data = Path(tempfile.mkdtemp(prefix=f"bench-data-{tag}-"))
    asyncio.run(_sql(admin_url, f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    env = {**os.environ, "DATABASE_URL": f"{base}/{name}", "AMQP_URL": amqp_url,
           "QUEUE_PREFIX": f"bench{tag}-", **s3,
           "BUCKET_INCOMING": f"in-{tag}", "BUCKET_DEIDENTIFIED": f"deid-{tag}",
           "BUCKET_QUARANTINE": f"quar-{tag}", "BUCKET_EXPORTS": f"exp-{tag}",
           "SCP_HOST": "127.0.0.1", "SCP_PORT": str(free_port()), "HEALTH_HOST": "127.0.0.1",
           "LOG_LEVEL": "WARNING", "WORKER_CONCURRENCY": "4", "DATA_DIR": str(data)}
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
        shutil.rmtree(data, ignore_errors=True)


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


# --- CPU accounting ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and its waited-for children (0 if gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system + times.children_user + times.children_system)


def server_pids(name: str) -> list[int]:
    """The processes called ``name`` (``beam.smp``, ``postgres``) on this machine."""
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == name]


class CpuMeter:
    """CPU seconds spent by named groups of processes between :meth:`start` and
    :meth:`stop`; a group's processes may appear during the run (PostgreSQL backends)."""

    def __init__(self, groups: dict[str, object]) -> None:
        # A group is a list of pids, or the name of server processes looked up each time.
        self.groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self.spent: dict[str, float] = {}

    def _pids(self, group: object) -> list[int]:
        if isinstance(group, str):
            return server_pids(group)
        assert isinstance(group, list)
        return group

    def _sample(self) -> dict[str, dict[int, float]]:
        return {name: {pid: cpu_seconds(pid) for pid in self._pids(group)}
                for name, group in self.groups.items()}

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> None:
        after = self._sample()
        self.spent = {name: sum(seconds - self._before[name].get(pid, 0.0)
                                for pid, seconds in after[name].items())
                      for name in self.groups}


def engine_cpu_per_object(admin_url: str, amqp_url: str, s3: dict[str, str],
                          files: list[Path]) -> float:
    """CPU seconds per file of ``benchmarks.deidentify``'s inner loop on ``files`` (warm
    index: a warm-up run first), in this process."""
    with deployment(admin_url, amqp_url, s3) as env:
        scratch = Path(tempfile.mkdtemp(prefix="bench-engine-"))
        try:
            asyncio.run(prepare_index(scratch, env["DATABASE_URL"], None))
            worker = FileWorker(JobSettings(env["DATABASE_URL"], ProfileOptions.ricord(),
                                            scratch / "out"))
            try:
                run_worker(worker, files, scratch / "warm")
                started = time.process_time()
                run_worker(worker, files, scratch / "timed")
                return (time.process_time() - started) / len(files)
            finally:
                worker.close()
        finally:
            shutil.rmtree(scratch)


def relink_drained(env: dict[str, str], timeout: float = 120) -> None:
    """Wait until the relink queue holds nothing ready and the relinker's CPU is still."""

    async def depth() -> int:
        from shared.messaging import RabbitBroker
        from shared.messaging.topology import RELINK, Topology

        broker = RabbitBroker(env["AMQP_URL"], Topology(env["QUEUE_PREFIX"]))
        await broker.connect()
        try:
            return await broker.depth(RELINK)
        finally:
            await broker.close()

    deadline = time.monotonic() + timeout
    while asyncio.run(depth()) and time.monotonic() < deadline:
        time.sleep(0.1)


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


def end_to_end(
    folders: list[Path], count: int, env: dict[str, str], workers: int,
    servers: dict[str, object],
) -> tuple[float, dict[str, float]]:
    """Send over several associations at once, so that the workers, not one sender,
    set the pace: the seconds to the last instance recorded, and the CPU seconds each
    process (ours, then ``servers``) spent until the relinker had drained its queue."""
    scp = start("scp_ingest", env)
    processes = [scp]
    worker_processes = [start("anonymizer_worker", env) for _ in range(workers)]
    processes += worker_processes
    relinker = start("rt_relinker", env)
    processes.append(relinker)
    # scp-ingest receives in processes of its own: they count as its CPU.
    receivers = [child.pid for child in psutil.Process(scp.pid).children(recursive=True)]
    groups: dict[str, object] = {"scp-ingest": [scp.pid, *receivers]}
    for n, process in enumerate(worker_processes, 1):
        groups[f"anonymizer-worker {n}"] = [process.pid]
    groups["rt-relinker"] = [relinker.pid]
    groups.update(servers)
    meter = CpuMeter(groups)
    try:
        meter.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(len(folders)) as pool:
            list(pool.map(lambda f: send(f, int(env["SCP_PORT"]), "ANONSCP"), folders))
        wait_for_instances(env["DATABASE_URL"], count)
        seconds = time.perf_counter() - started
        relink_drained(env)
        meter.stop()
        return seconds, meter.spent
    finally:
        stop(processes)


def cpu_table(spent: dict[str, float], count: int, engine: float) -> dict[str, dict[str, float]]:
    """Per process: CPU seconds per object and its multiple of the engine's."""
    rows = {}
    for name, seconds in spent.items():
        per_object = seconds / count
        rows[name] = {"cpu_ms_per_object": round(per_object * 1000, 2),
                      "x_engine": round(per_object / engine, 2)}
    return rows


def print_cpu_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(title)
    print(f"  {'process':<22}{'CPU ms/object':>14}{'x engine':>10}")
    for name, row in rows.items():
        print(f"  {name:<22}{row['cpu_ms_per_object']:>14.2f}{row['x_engine']:>10.2f}")
    sys.stdout.flush()


def start_moto() -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """moto's S3 server as a process of its own, so that its CPU can be told apart."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2):
                break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        raise RuntimeError("moto's S3 server did not start")
    return process, {"S3_ENDPOINT": f"127.0.0.1:{port}", "S3_ACCESS_KEY": "bench",
                     "S3_SECRET_KEY": "benchbench"}


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
    servers: dict[str, object] = {"RabbitMQ (beam.smp)": "beam.smp", "PostgreSQL": "postgres"}
    if os.environ.get("BENCH_S3_ENDPOINT"):
        s3 = {"S3_ENDPOINT": os.environ["BENCH_S3_ENDPOINT"],
              "S3_ACCESS_KEY": os.environ.get("BENCH_S3_ACCESS_KEY", ""),
              "S3_SECRET_KEY": os.environ.get("BENCH_S3_SECRET_KEY", "")}
    else:
        moto, s3 = start_moto()
        servers["S3 server (moto)"] = [moto.pid]
    try:
        files = sorted(corpus.path.glob("*.dcm"))[: args.files]
        engine = engine_cpu_per_object(admin, amqp, s3, files)
        reference = storescp_seconds(folder)
        with deployment(admin, amqp, s3) as env:
            ours = ingest_seconds(folder, env)
        results: dict[str, float] = {
            "files": args.files, "storescp_s": round(reference, 3),
            "scp_ingest_s": round(ours, 3), "ingest_ratio": round(reference / ours, 2),
        }
        results["engine_cpu_ms_per_object"] = round(engine * 1000, 2)
        tables: dict[str, dict[str, dict[str, float]]] = {}
        for workers in (1, 2):
            with deployment(admin, amqp, s3) as env:
                seconds, spent = end_to_end(parts, args.files, env, workers, servers)
            results[f"end_to_end_{workers}_worker_files_per_s"] = round(args.files / seconds, 1)
            ours = sum(v for k, v in spent.items() if k not in servers)
            spent["ours, together"] = ours
            tables[f"cpu_{workers}_worker"] = cpu_table(spent, args.files, engine)
        results["speedup_2_vs_1"] = round(results["end_to_end_2_worker_files_per_s"]
                                          / results["end_to_end_1_worker_files_per_s"], 2)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait()
        shutil.rmtree(folder)
    print(json.dumps(results, indent=2))
    print(f"engine alone (benchmarks.deidentify's inner loop): "
          f"{results['engine_cpu_ms_per_object']:.2f} CPU ms/object")
    for name, rows in tables.items():
        print_cpu_table(f"{name.replace('_', ' ')} (end to end):", rows)
    if args.json:
        args.json.write_text(json.dumps({**results, **tables}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
