"""The capacity model of ``docs/capacity.md``, from per-object costs measured here.

    python -m benchmarks.capacity [--corpus benchmarks/corpus] [--json FILE]

For each kind of object of the model's backlog (CT slices of 512x512, 0.5 MB; CR/DX
radiographs of 2,304x2,304, about 10 MB; MR slices of 256x256, 0.13 MB) it runs the
deployed pipeline end to end, as ``benchmarks.pipeline`` does (scp-ingest, one
anonymizer-worker, rt-relinker, against the machine's RabbitMQ and PostgreSQL and moto's
S3 server as a process of its own), and measures the CPU seconds per object of every
process, and the engine's own CPU per object (``benchmarks.deidentify``'s inner loop).

From those it prints, for one million images (70 % CT, 20 % CR/DX, 10 % MR) finished in
24 hours, in 8 hours and in 1 hour: the objects and bytes per second, the cores each
service needs (receiver processes, workers, relinkers) and the backing servers'
(RabbitMQ, PostgreSQL), the database connections, and the object store's throughput
(each object is written once as received, read once by a worker, written once
de-identified and read once by the exporter). moto's CPU is printed for what it is (a
Python test server), not used for the object store, which is sized in bytes per second.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from benchmarks import scale
from benchmarks.corpus import CorpusSpec, build_corpus
from benchmarks.pipeline import (
    LOCAL_DB,
    deployment,
    end_to_end,
    engine_cpu_per_object,
    start_moto,
)

KINDS = {  # name: (rows = columns, files measured, share of the backlog)
    "CT": (512, scale.size(200, 4), 0.7),
    "CR/DX": (2304, scale.size(30, 2), 0.2),
    "MR": (256, scale.size(200, 4), 0.1),
}
BACKLOG = 1_000_000
DEADLINES = {"24 hours": 24 * 3600, "8 hours": 8 * 3600, "1 hour": 3600}
OURS = ("scp-ingest", "anonymizer-worker 1", "rt-relinker")
SERVERS = ("rabbitmq", "postgres")
# Connections a worker process holds (its pool; WORKER_CONCURRENCY objects in flight use
# at most this many at once), and those of each other process.
WORKER_CONNECTIONS = 4
OTHER_CONNECTIONS = 2


def measure(corpus: Path, admin: str, amqp: str) -> dict[str, dict[str, float]]:
    """Per kind: CPU seconds per object of each process, the engine's, and the bytes."""
    moto, s3 = start_moto()
    results: dict[str, dict[str, float]] = {}
    try:
        for kind, (size, count, _) in KINDS.items():
            name = f"capacity-{kind.replace('/', '').lower()}"
            built = build_corpus(corpus / name, CorpusSpec(name, count, size))
            files = sorted(built.path.glob("*.dcm"))
            engine = engine_cpu_per_object(admin, amqp, s3, files)
            with deployment(admin, amqp, s3) as env:
                seconds, spent = end_to_end(
                    [built.path], count, env, 1,
                    {"rabbitmq": "beam.smp", "postgres": "postgres", "moto (S3)": [moto.pid]})
            row = {process: cpu / count for process, cpu in spent.items()}
            row["engine"] = engine
            row["bytes"] = sum(path.stat().st_size for path in files) / count
            row["end_to_end_files_per_s"] = count / seconds
            results[kind] = row
            print(f"{kind}: {count} files of {row['bytes'] / 1e6:.2f} MB, "
                  f"{row['end_to_end_files_per_s']:.1f} files/s end to end; CPU ms/object: "
                  + ", ".join(f"{p} {v * 1000:.1f}" for p, v in row.items()
                              if p not in ("bytes", "end_to_end_files_per_s")), flush=True)
    finally:
        moto.terminate()
        moto.wait()
    return results


def model(costs: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """What the backlog needs per deadline, from the per-object costs of each kind."""
    mix = {kind: share for kind, (_, _, share) in KINDS.items()}

    def mean(process: str) -> float:
        return sum(mix[kind] * costs[kind][process] for kind in mix)

    per_object = {process: mean(process) for process in (*OURS, *SERVERS, "bytes", "engine")}
    plan: dict[str, dict[str, float]] = {}
    for label, seconds in DEADLINES.items():
        rate = BACKLOG / seconds
        cores = {process: rate * per_object[process] for process in (*OURS, *SERVERS)}
        receivers = max(1, math.ceil(cores["scp-ingest"]))
        workers = max(1, math.ceil(cores["anonymizer-worker 1"]))
        relinkers = max(1, math.ceil(cores["rt-relinker"]))
        plan[label] = {
            "objects_per_s": rate,
            "input_mb_per_s": rate * per_object["bytes"] / 1e6,
            "object_store_mb_per_s": 4 * rate * per_object["bytes"] / 1e6,
            "scp_cores": cores["scp-ingest"], "scp_processes": receivers,
            "worker_cores": cores["anonymizer-worker 1"], "worker_processes": workers,
            "relinker_cores": cores["rt-relinker"], "relinker_processes": relinkers,
            "rabbitmq_cores": cores["rabbitmq"], "postgres_cores": cores["postgres"],
            "database_connections": workers * WORKER_CONNECTIONS
            + (receivers + relinkers + 2) * OTHER_CONNECTIONS,
            "total_cores": sum(cores.values()),
        }
    plan["per object (mix)"] = {f"{p}_cpu_ms": v * 1000 for p, v in per_object.items()
                                if p != "bytes"}
    plan["per object (mix)"]["mb"] = per_object["bytes"] / 1e6
    return plan


def print_plan(plan: dict[str, dict[str, float]]) -> None:
    print(f"\n{BACKLOG:,} images (70 % CT 0.5 MB, 20 % CR/DX 10 MB, 10 % MR)")
    mix = plan["per object (mix)"]
    print("  per object of the mix: " + ", ".join(f"{k} {v:.2f}" for k, v in mix.items()))
    for label in DEADLINES:
        row = plan[label]
        print(f"  in {label}: {row['objects_per_s']:.0f} objects/s, "
              f"{row['input_mb_per_s']:.0f} MB/s received, object store "
              f"{row['object_store_mb_per_s']:.0f} MB/s; cores: SCP {row['scp_cores']:.2f} "
              f"({row['scp_processes']:.0f} processes), workers {row['worker_cores']:.1f} "
              f"({row['worker_processes']:.0f} processes), relinker "
              f"{row['relinker_cores']:.2f}, RabbitMQ {row['rabbitmq_cores']:.2f}, "
              f"PostgreSQL {row['postgres_cores']:.2f}; total {row['total_cores']:.1f} cores; "
              f"{row['database_connections']:.0f} database connections")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=scale.corpus("benchmarks/corpus"))
    parser.add_argument("--json", type=Path, help="also write the costs and the plan here")
    args = parser.parse_args(argv)
    admin = os.environ.get("BENCH_DATABASE_URL", LOCAL_DB)
    amqp = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    costs = measure(args.corpus, admin, amqp)
    plan = model(costs)
    print_plan(plan)
    if args.json:
        args.json.write_text(json.dumps({"costs": costs, "plan": plan}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

