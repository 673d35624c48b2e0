"""Cost of rt-relinker per study size (``python -m benchmarks.relinker [--repeat 3]
[--small 300] [--large 3000] [--corpus benchmarks/corpus/relinker] [--server URL]``).

A relinker that re-read and re-checked its whole study on every arrival (the version
before migration 0011) did work that grew with the square of the study, so a large
planning CT cost far more per object than a small one; the incremental check
(``shared/rt/set_state.py``) should make the work per arrival independent of the study's
size. This benchmark measures the growth: for a study of ``--small`` and one of
``--large`` CT slices, each with an RTSTRUCT contouring every slice, an RTPLAN and an
RTDOSE, it times one relinker handling every object's message, one after the other, in two
arrival orders: the images first and the RT objects last, and the RTSTRUCT first, then the
images, then the plan and the dose. It prints the seconds, the milliseconds per object, the
objects read from the store per arrival, the mean milliseconds per arrival over the first
and the last tenth of the arrivals and the slowest arrival (of the median run), and the
ratio large/small of the seconds (10 when the work per object does not depend on the
study's size).

The sets are generated and de-identified by ``anon deidentify`` once and cached under
``--corpus``; for every run the de-identified objects are put into a fresh local-folder
store and the index is a fresh database, migrated before timing, on ``--server``
(default ``TEST_DATABASE_URL``, else ``DATABASE_URL``, else an embedded server). Medians of
``--repeat`` runs, the runs of both sizes taken in turns, after an untimed run of the small
set (the process's first run pays for imports and caches filled once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import scale
from benchmarks.deidentify import Databases
from services.cli.main import main as anon
from services.rt_relinker.relinker import RtRelinker
from shared.dicom.parse import parse
from shared.index.connect import open_index
from shared.messaging import Message
from shared.rt.store import set_status
from shared.storage import Buckets
from shared.storage.local import LocalStore
from tests import synth

SMALL = scale.size(300, 10)
LARGE = scale.size(3000, 100)
ROIS = scale.size(4, 2)
PIXELS = 16  # the relinker reads references, not pixels: small images keep the corpus small
COMPLETE = "COMPLETE"
ORDERS = ("images first", "struct first")


class CountingStore(LocalStore):
    """The local-folder store, counting the objects read."""

    reads = 0

    async def get(self, bucket: str, key: str) -> bytes:
        self.reads += 1
        return await super().get(bucket, key)


def _deidentify(source: Path, out: Path, databases: Databases) -> None:
    """De-identify ``source`` into ``out`` with ``anon deidentify`` on a fresh index."""
    url = databases.fresh()
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    try:
        with (tempfile.TemporaryDirectory(prefix="bench-relink-data-") as data,
              contextlib.redirect_stdout(io.StringIO())):  # its summary is not a figure
            code = anon(["deidentify", str(source), "--out", str(out), "--data-dir", data,
                         "--recursive", "--no-progress", "--quarantine", f"{data}/q"])
    finally:
        if previous is None:
            del os.environ["DATABASE_URL"]
        else:
            os.environ["DATABASE_URL"] = previous
        databases.drop(url)
    if code != 0:
        raise RuntimeError("the benchmark set was not de-identified cleanly")


def build_set(corpus: Path, slices: int, databases: Databases) -> Path:
    """The folder of the de-identified set of ``slices`` CT slices (made when missing)."""
    folder = corpus / f"ct{slices}"
    out = folder / "deidentified"
    if (folder / COMPLETE).exists():
        return out
    shutil.rmtree(folder, ignore_errors=True)
    source = folder / "source"
    source.mkdir(parents=True)
    rt = synth.make_rt_set(slices, ROIS, 1, rows=PIXELS, cols=PIXELS)
    for n, ds in enumerate(rt.all()):
        synth.write(ds, source / f"{n:05d}.dcm")
    _deidentify(source, out, databases)
    shutil.rmtree(source)
    (folder / COMPLETE).write_text(f"{slices} CT, {ROIS} ROIs, 1 beam\n")
    return out


def arrival(folder: Path, order: str) -> list[tuple[str, bytes]]:
    """(key, bytes) of every object of the set in ``order``."""
    objects: dict[str, list[tuple[str, bytes]]] = {}
    for path in sorted(folder.rglob("*.dcm")):
        data = path.read_bytes()
        modality = parse(data).get_text(0x00080060) or ""
        objects.setdefault(modality, []).append((str(path.relative_to(folder)), data))
    images, rt = objects.pop("CT"), [o for m in ("RTSTRUCT", "RTPLAN", "RTDOSE")
                                     for o in objects.pop(m)]
    if objects:
        raise RuntimeError("unexpected objects in the benchmark set")
    if order == "images first":
        return images + rt
    return rt[:1] + images + rt[1:]


@dataclass(frozen=True)
class Run:
    seconds: float
    reads_per_arrival: float
    status: str
    arrivals: tuple[float, ...] = ()  # seconds of each message, in arrival order

    def tenths(self) -> tuple[float, float]:
        """Mean milliseconds per arrival over the first and the last tenth of arrivals."""
        tenth = max(1, len(self.arrivals) // 10)
        first, last = self.arrivals[:tenth], self.arrivals[-tenth:]
        return 1000 * statistics.fmean(first), 1000 * statistics.fmean(last)


async def _relink(objects: list[tuple[str, bytes]], url: str, scratch: Path) -> Run:
    buckets = Buckets()
    store = CountingStore(scratch, fsync=False)
    await store.ensure_buckets([buckets.deidentified])
    for key, data in objects:
        await store.put(buckets.deidentified, key, data)
    opened = await open_index(None, url, max_connections=2)
    try:
        relinker = RtRelinker(store, opened.pool, buckets.deidentified)
        messages = [Message({"bucket": buckets.deidentified, "key": key}, f"bench{n}", 1,
                            "relink") for n, (key, _) in enumerate(objects)]
        arrivals = []
        start = time.perf_counter()
        for message in messages:
            began = time.perf_counter()
            await relinker.handle(message)
            arrivals.append(time.perf_counter() - began)
        seconds = time.perf_counter() - start
        async with opened.pool.acquire() as connection:
            study = await connection.fetchval("SELECT pseudo_study_uid FROM rt_set")
        status = await set_status(opened.pool, str(study))
    finally:
        await opened.close()
    return Run(seconds, store.reads / len(objects),
               status.status if status is not None else "unchecked", tuple(arrivals))


def measure(folder: Path, order: str, databases: Databases, repeat: int) -> list[Run]:
    objects = arrival(folder, order)
    runs: list[Run] = []
    for _ in range(repeat):
        url = databases.fresh()
        scratch = Path(tempfile.mkdtemp(prefix="bench-relink-store-"))
        try:
            runs.append(asyncio.run(_relink(objects, url, scratch)))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            databases.drop(url)
    return runs


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) both sets, time the relinker on each in both orders, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path,
                        default=scale.corpus("benchmarks/corpus/relinker"))
    parser.add_argument("--repeat", type=int, default=scale.size(3, 1))
    parser.add_argument("--small", type=int, default=SMALL, help="CT slices of the small set")
    parser.add_argument("--large", type=int, default=LARGE, help="CT slices of the large set")
    parser.add_argument("--server", help="PostgreSQL server for the fresh databases "
                        "(default TEST_DATABASE_URL, DATABASE_URL, else an embedded one)")
    args = parser.parse_args(argv)
    server = args.server or os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    databases = Databases(server)
    try:
        sets = {n: build_set(args.corpus, n, databases) for n in (args.small, args.large)}
        # Untimed: the process's first run pays for imports and caches filled once.
        measure(sets[args.small], ORDERS[0], databases, 1)
        for order in ORDERS:
            medians: dict[int, float] = {}
            # The sizes' runs alternate, so that a busy spell of the machine falls on both.
            by_size: dict[int, list[Run]] = {slices: [] for slices in sets}
            for _ in range(args.repeat):
                for slices, folder in sets.items():
                    by_size[slices] += measure(folder, order, databases, 1)
            for slices, runs in by_size.items():
                objects = slices + 3
                median = statistics.median(r.seconds for r in runs)
                medians[slices] = median
                reads = max(r.reads_per_arrival for r in runs)
                typical = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
                first, last = typical.tenths()
                print(f"{order}, {slices} CT + 3 RT: {median:.2f} s, "
                      f"{1000 * median / objects:.2f} ms per object, "
                      f"{reads:.2f} store reads per arrival, set {runs[-1].status} "
                      f"(runs {', '.join(f'{r.seconds:.2f}' for r in runs)} s); "
                      f"{first:.2f} ms per arrival over the first tenth, {last:.2f} over "
                      f"the last, slowest {1000 * max(typical.arrivals):.0f} ms")
            ratio = medians[args.large] / medians[args.small]
            print(f"{order}: ratio {args.large}/{args.small} = {ratio:.1f}")
    finally:
        databases.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
