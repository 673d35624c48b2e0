"""Peak memory of de-identifying one large object
(``python -m benchmarks.memory [--sizes 200,1024] [--folder DIR]``).

For each size (MiB) a multi-frame CT of 512x512 16-bit frames is written (header with
pydicom, pixel data streamed, so building it costs no memory), then measured in a fresh
process each, so one figure never carries over into the next:

- ``worker``: the anonymizer worker's path for one message: the object is in the
  incoming bucket of a local object store, and ``AnonymizerWorker.handle`` reads it,
  pseudonymizes it with the PHI index and puts the result into the de-identified bucket.
- ``worker-s3``: the same with the S3 store, against moto's S3 server (``moto_server``,
  another process) as deployed workers use MinIO.
- ``deidentify``: ``anon deidentify FILE --out DIR --jobs 1`` in the process.

Each process reports its peak resident set size (``ru_maxrss``), the peak before the object
was touched (interpreter, libraries, connections) and the difference; the ratio is that
difference over the object's size (the target is about 2: the object in and the object
out). The PHI index is ``DATABASE_URL`` when set, else an embedded PostgreSQL in the
folder (its server is another process, not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.scale import SMOKE

MIB = 1 << 20
ROWS = COLS = 512
FRAME_BYTES = ROWS * COLS * 2
PATTERN_BYTES = 8 * MIB


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def build_object(path: Path, size_mib: int) -> int:
    """Write a multi-frame CT of about ``size_mib`` MiB of pixel data; its size in bytes."""
    import numpy as np

    from tests import synth

    frames = max(1, size_mib * MIB // FRAME_BYTES)
    (ds,) = synth.make_ct_series(1, rows=ROWS, cols=COLS)
    del ds.PixelData
    ds.NumberOfFrames = frames
    synth.write(ds, path)
    pixels = frames * FRAME_BYTES
    pattern = (np.arange(PATTERN_BYTES // 2, dtype=np.uint16) % 4096).tobytes()
    with path.open("ab") as out:
        # (7FE0,0010) OW, explicit VR little endian, the last element of the data set.
        out.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, pixels))
        left = pixels
        while left:
            chunk = pattern[: min(left, len(pattern))]
            out.write(chunk)
            left -= len(chunk)
    return path.stat().st_size


# -- the measured processes ---------------------------------------------------------------


async def _worker_run(source: Path, folder: Path, url: str, s3: str) -> dict[str, Any]:
    from services.anonymizer_worker.worker import AnonymizerWorker
    from shared.deid.profile import build_profile
    from shared.deid.pseudonymizer import Pseudonymizer
    from shared.index.connect import open_index
    from shared.messaging import MemoryBroker, Message
    from shared.messaging.topology import Topology
    from shared.storage import Buckets, LocalStore, ObjectStore, S3Store

    # moto takes long to assemble a large multipart upload: a generous read timeout.
    store: ObjectStore = (S3Store(s3, "bench-key", "bench-secret", read_timeout=600) if s3
                          else LocalStore(folder / "objects", fsync=False))
    tag = os.urandom(6).hex()  # a bucket name's part: letters and digits only
    buckets = Buckets(f"in-{tag}", f"deid-{tag}", f"quar-{tag}", f"exp-{tag}")
    await store.ensure_buckets(buckets.all())
    opened = await open_index(None, url, max_connections=2)
    broker = MemoryBroker(Topology("bench-", 3))
    await broker.connect()
    try:
        worker = AnonymizerWorker(store, buckets, broker, Pseudonymizer(
            opened.index, opened.site, build_profile()))
        await store.put_file(buckets.incoming, "ab/object.dcm", source)  # streamed
        baseline = _peak_bytes()
        started = time.perf_counter()
        await worker.handle(Message({"bucket": buckets.incoming, "key": "ab/object.dcm",
                                     "source": "import"}, "bench", 1, "anonymize"))
        seconds = time.perf_counter() - started
        written = await store.list_keys(buckets.deidentified)
        if len(written) != 1:
            raise RuntimeError(f"the worker wrote {len(written)} objects, not 1")
    finally:
        await broker.close()
        await opened.close()
        await store.close()
    return {"baseline": baseline, "peak": _peak_bytes(), "seconds": seconds}


def _deidentify_run(source: Path, folder: Path, url: str) -> dict[str, Any]:
    from services.cli.main import main

    os.environ["DATABASE_URL"] = url
    out = folder / "out"
    args = ["deidentify", str(source), "--out", str(out), "--jobs", "1", "--no-progress",
            "--data-dir", str(folder / "cli-data")]
    baseline = _peak_bytes()
    started = time.perf_counter()
    status = main(args)
    seconds = time.perf_counter() - started
    if status != 0 or len(list(out.rglob("*.dcm"))) != 1:
        raise RuntimeError(f"anon deidentify failed (status {status})")
    return {"baseline": baseline, "peak": _peak_bytes(), "seconds": seconds}


def _child(mode: str, source: Path, folder: Path, url: str, s3: str) -> int:
    if mode.startswith("worker"):
        found = asyncio.run(_worker_run(source, folder, url, s3 if mode == "worker-s3" else ""))
    else:
        found = _deidentify_run(source, folder, url)
    print(json.dumps(found))
    return 0


def _measure(mode: str, source: Path, folder: Path, url: str, s3: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=folder))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", "--child", mode, str(source),
             str(work), url, s3],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{mode} failed: {done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _database(folder: Path) -> tuple[str, Path | None]:
    """The index URL, and the embedded server's data folder to stop afterwards."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return configured, None
    from shared.batch.deidentify import prepare_index

    data_dir = folder / "index"
    return asyncio.run(prepare_index(data_dir, None, None)).url, data_dir


def _moto_server() -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server in a process of its own, and its endpoint."""
    from tests.s3_server import free_port

    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p",
         str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("moto_server did not start")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        mode, source, folder, url, s3 = argv[1:6]
        return _child(mode, Path(source), Path(folder), url, s3)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="8" if SMOKE else "200,1024",
                        help="object sizes in MiB")
    parser.add_argument("--paths", default="worker,worker-s3,deidentify",
                        help="what to measure (worker, worker-s3, deidentify)")
    parser.add_argument("--folder", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    modes = args.paths.split(",")
    folder = Path(tempfile.mkdtemp(prefix="bench-memory-", dir=args.folder))
    url, embedded = _database(folder)
    server, s3 = _moto_server() if "worker-s3" in modes else (None, "")
    rows = []
    try:
        for size_mib in (int(s) for s in args.sizes.split(",")):
            source = folder / f"ct-{size_mib}mib.dcm"
            size = build_object(source, size_mib)
            for mode in modes:
                found = _measure(mode, source, folder, url, s3)
                extra = found["peak"] - found["baseline"]
                rows.append((mode, size, found["baseline"], found["peak"], extra / size,
                             found["seconds"]))
            source.unlink()
    finally:
        if server is not None:
            server.kill()
            server.wait()
        if embedded is not None:
            import pgserver

            pgserver.get_server(embedded / "postgres").cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(folder, ignore_errors=True)
    print(f"{'path':<11}{'object':>10}{'before':>10}{'peak':>10}{'peak-before':>13}"
          f"{'ratio':>7}{'seconds':>9}")
    for mode, size, baseline, peak, ratio, seconds in rows:
        print(f"{mode:<11}{size / MIB:>7.0f} MiB{baseline / MIB:>6.0f} MiB{peak / MIB:>6.0f} MiB"
              f"{(peak - baseline) / MIB:>9.0f} MiB{ratio:>7.2f}{seconds:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
