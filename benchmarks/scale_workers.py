"""Does a second worker process double the throughput? The anonymizer worker's handling
loop in 1 and 2 processes, each pinned to a core of its own.

    python -m benchmarks.scale_workers [--files 1000] [--corpus benchmarks/corpus]

End to end on a two-core machine (``benchmarks.pipeline``) the workers share the cores
with RabbitMQ, PostgreSQL and the S3 server, so a second worker cannot show what it adds.
Here each process runs the worker's handler (``AnonymizerWorker.handle``: fetch the
received object, de-identify, store, record in the PHI index, announce on the relink
queue, delete the received copy) fed by the in-process broker that ``anon serve`` uses,
over its share of the same corpus, pinned with ``os.sched_setaffinity`` to core 0 or 1.
Throughput is the files of all processes over the wall time from the common start to the
last one's end; every configuration runs on a fresh database of the machine's PostgreSQL
(``BENCH_DATABASE_URL``), which still shares the cores (its CPU per object is printed).

1. **local store**: objects in a folder (``shared.storage`` local store), no server.
2. **S3 (moto)**: objects in moto's S3 server, a process started here and not pinned, so
   it runs on the same two cores: its CPU per object and the throughput lost show what
   an S3 server on the workers' cores costs.

First it measures the machine itself (``machine_ratio_2_vs_1``): the same fixed piece of
pure Python work in one process, then in two processes at once, each pinned to its own
core. A virtual machine's two cores may be two hardware threads of one physical core, or
share it with other guests; then two processes do less than twice the work of one whatever
the program, and that ratio is the ceiling of every other ratio here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import scale
from benchmarks.corpus import CorpusSpec, build_corpus
from benchmarks.pipeline import LOCAL_DB, CpuMeter, _sql, start_moto

CONCURRENCY = 4


async def _handle_share(files: list[Path], database_url: str, store_options: dict[str, str],
                        objects: Path, barrier: Any) -> tuple[float, float]:
    """Upload this process's share, wait for the others, then handle it; the wall clock
    (start, end) of the handling."""
    from services.anonymizer_worker.worker import AnonymizerWorker
    from shared.deid.configured import load_rules
    from shared.deid.options import ProfileOptions
    from shared.deid.pseudonymizer import Pseudonymizer
    from shared.index.connect import open_index
    from shared.messaging import MemoryBroker
    from shared.messaging.topology import ANONYMIZE, Topology
    from shared.storage import Buckets, open_store

    index = await open_index(None, database_url, max_connections=8, run_migrations=False)
    store = open_store(store_options.get("endpoint"), store_options.get("access_key", ""),
                       store_options.get("secret_key", ""), False, objects)
    buckets = Buckets("incoming", "deidentified", "quarantine", "exports")
    await store.ensure_buckets(buckets.all())
    broker = MemoryBroker(Topology("scale-"))
    await broker.connect()
    try:
        keys = []
        for path in files:
            key = f"{uuid.uuid4().hex}.dcm"
            await store.put(buckets.incoming, key, path.read_bytes())
            keys.append(key)
        rules = load_rules(ProfileOptions.ricord(), index.site.site_id)
        worker = AnonymizerWorker(store, buckets, broker,
                                  Pseudonymizer(index.index, index.site, rules))
        done = asyncio.Event()
        handled = 0

        async def handle(message: Any) -> None:
            nonlocal handled
            await worker.handle(message)
            handled += 1
            if handled == len(keys):
                done.set()

        await asyncio.to_thread(barrier.wait)
        started = time.time()
        for key in keys:
            await broker.publish(ANONYMIZE, {"key": key, "bucket": buckets.incoming}, "scale")
        consumer = await broker.consume(ANONYMIZE, handle, prefetch=CONCURRENCY)
        await done.wait()
        ended = time.time()
        await consumer.cancel()
        return started, ended
    finally:
        await broker.close()
        await store.close()
        await index.close()


def _process(core: int, files: list[Path], database_url: str, store_options: dict[str, str],
             objects: Path, barrier: Any, results: Any) -> None:
    os.sched_setaffinity(0, {core})
    import uvloop

    results.put(uvloop.run(_handle_share(files, database_url, store_options, objects,
                                         barrier)))


CALIBRATION_LOOPS = scale.size(6_000_000, 100_000)


def _busy(core: int, barrier: Any, results: Any) -> None:
    """A fixed piece of interpreter work on one core; its wall-clock seconds."""
    os.sched_setaffinity(0, {core})
    barrier.wait()
    started = time.perf_counter()
    total = 0
    for n in range(CALIBRATION_LOOPS):
        total += n * n % 7
    results.put(time.perf_counter() - started)


def machine_ratio() -> dict[str, float]:
    """The work two pinned processes do at once divided by what one does alone (2.0 on
    two free physical cores), median of three rounds."""
    context = multiprocessing.get_context("spawn")
    cores = sorted(os.sched_getaffinity(0))
    rounds = []
    for _ in range(3):
        seconds = {}
        for processes in (1, 2):
            barrier = context.Barrier(processes)
            results = context.Queue()
            busy = [context.Process(target=_busy, args=(cores[n % len(cores)], barrier,
                                                         results))
                    for n in range(processes)]
            for process in busy:
                process.start()
            seconds[processes] = max(results.get(timeout=120) for _ in busy)
            for process in busy:
                process.join()
        rounds.append((seconds[1], 2 * seconds[1] / seconds[2]))
    rounds.sort(key=lambda r: r[1])
    one, ratio = rounds[1]
    return {"calibration_s_1_process": round(one, 3), "machine_ratio_2_vs_1": round(ratio, 2)}


def run(files: list[Path], processes: int, admin_url: str,
        store_options: dict[str, str], servers: dict[str, object]) -> dict[str, float]:
    """Files/s of ``processes`` pinned worker processes over ``files`` split between them,
    and the CPU ms per object of ``servers`` meanwhile."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_sql(admin_url, f'CREATE DATABASE "{name}"'))
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    objects = Path(tempfile.mkdtemp(prefix="bench-objects-"))
    try:
        from shared.index.connect import open_index

        async def prepare() -> None:
            index = await open_index(None, url)
            await index.close()

        asyncio.run(prepare())
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(processes + 1)
        results = context.Queue()
        shares = [files[n::processes] for n in range(processes)]
        cores = sorted(os.sched_getaffinity(0))
        workers = [context.Process(target=_process, args=(cores[n % len(cores)], share, url,
                                                          store_options, objects, barrier,
                                                          results))
                   for n, share in enumerate(shares)]
        for worker in workers:
            worker.start()
        meter = CpuMeter({**servers, "workers": [w.pid for w in workers if w.pid]})
        barrier.wait()
        meter.start()
        spans = [results.get(timeout=600) for _ in workers]
        meter.stop()
        for worker in workers:
            worker.join()
        seconds = max(end for _, end in spans) - min(start for start, _ in spans)
        rate = len(files) / seconds
        figures = {"files_per_s": round(rate, 1)}
        for server, spent in meter.spent.items():
            figures[f"{server}_cpu_ms_per_object"] = round(spent / len(files) * 1000, 2)
        # The cores the run kept busy, and the files per second one busy core gives: when
        # that stays the same from one process to two, each process adds a core's worth
        # and what is missing from the ratio is cores the machine does not have.
        cpu_ms = sum(meter.spent.values()) / len(files) * 1000
        figures["cores_busy"] = round(rate * cpu_ms / 1000, 2)
        figures["files_per_core_s"] = round(1000 / cpu_ms, 1)
        return figures
    finally:
        shutil.rmtree(objects)
        asyncio.run(_sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=scale.size(1000, 20))
    parser.add_argument("--corpus", type=Path, default=scale.corpus("benchmarks/corpus"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    corpus = build_corpus(args.corpus / "small", CorpusSpec("small", scale.size(2000, 20), 64))
    files = sorted(corpus.path.glob("*.dcm"))[: args.files]
    admin = os.environ.get("BENCH_DATABASE_URL", LOCAL_DB)
    postgres: dict[str, object] = {"postgres": "postgres"}
    machine = machine_ratio()
    results: dict[str, dict[str, float]] = {}
    for processes in (1, 2):
        results[f"local_{processes}_process"] = run(files, processes, admin, {}, postgres)
    moto, s3 = start_moto()
    try:
        store = {"endpoint": s3["S3_ENDPOINT"], "access_key": s3["S3_ACCESS_KEY"],
                 "secret_key": s3["S3_SECRET_KEY"]}
        for processes in (1, 2):
            results[f"s3_{processes}_process"] = run(
                files, processes, admin, store, {**postgres, "moto": [moto.pid]})
    finally:
        moto.terminate()
        moto.wait()
    summary = {
        "files": len(files),
        **machine,
        "local_ratio_2_vs_1": round(results["local_2_process"]["files_per_s"]
                                    / results["local_1_process"]["files_per_s"], 2),
        "s3_ratio_2_vs_1": round(results["s3_2_process"]["files_per_s"]
                                 / results["s3_1_process"]["files_per_s"], 2),
        "local_per_core_ratio_2_vs_1": round(
            results["local_2_process"]["files_per_core_s"]
            / results["local_1_process"]["files_per_core_s"], 2),
        "s3_throughput_lost_2_process": round(
            1 - results["s3_2_process"]["files_per_s"]
            / results["local_2_process"]["files_per_s"], 2),
    }
    output = {**results, **summary}
    for name, figures in results.items():
        print(f"{name.replace('_', ' '):<18}" + "  ".join(f"{k} {v}" for k, v in figures.items()))
    for name, value in summary.items():
        print(f"{name}: {value}")
    sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
