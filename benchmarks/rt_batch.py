"""Speed of ``anon rt-batch`` on one large radiotherapy planning set
(``python -m benchmarks.rt_batch [--corpus benchmarks/corpus/rt] [--repeat 3] [--jobs N]``).
The set (200 CT slices of 512x512 pixels, an RTSTRUCT of 20 ROIs contoured over the slices,
an RTPLAN and an RTDOSE) is generated once and cached under ``--corpus``. The PHI index is
an embedded PostgreSQL in a temporary data folder, started and migrated before timing, so
the figure covers only the batch work: read and check the set, de-identify every object,
write it, check the output set again and record it in the index. The figure is the median
of ``--repeat`` runs after one warm-up run, each into a fresh output folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import scale
from shared.index.connect import open_index
from shared.rt.batch import BatchOptions, run_batch
from tests import synth

CT_SLICES = scale.size(200, 8)
ROIS = scale.size(20, 2)
BEAMS = scale.size(5, 1)
SIZE = scale.size(512, 64)
SET_NAME = "patient_001"
COMPLETE = "COMPLETE"


def build_set(corpus: Path) -> tuple[Path, float]:
    """The batch root holding the cached set (generated when missing) and the seconds
    spent generating it (0 when cached)."""
    root = corpus / "root"
    marker = corpus / COMPLETE
    if marker.exists():
        return root, 0.0
    start = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    folder = root / SET_NAME
    folder.mkdir(parents=True)
    rt = synth.make_rt_set(CT_SLICES, ROIS, BEAMS, rows=SIZE, cols=SIZE)
    for n, ds in enumerate(rt.ct):
        synth.write(ds, folder / f"CT{n:04d}.dcm")
    synth.write(rt.rtstruct, folder / "RS.dcm")
    synth.write(rt.rtplan, folder / "RP.dcm")
    synth.write(rt.rtdose, folder / "RD.dcm")
    marker.write_text(f"{CT_SLICES} CT {SIZE}x{SIZE}, {ROIS} ROIs, {BEAMS} beams\n")
    return root, time.perf_counter() - start


async def _prepare_index(data_dir: Path) -> str:
    """Start, create and migrate the embedded index of ``data_dir``; its URL."""
    opened = await open_index(data_dir, None, None, max_connections=1)
    await opened.close()
    return opened.url


def _stop_embedded(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL of ``data_dir`` before its folder is removed (it would
    otherwise outlive the benchmark, unable to find its folder to stop cleanly)."""
    import pgserver

    pgserver.get_server(data_dir / "postgres").cleanup()  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    """Generate (or reuse) the set, time the batch and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=scale.corpus("benchmarks/corpus/rt"))
    parser.add_argument("--repeat", type=int, default=scale.size(3, 1))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    root, generated = build_set(args.corpus)
    if generated:
        print(f"generated the set in {generated:.1f} s")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-rt-index-"))
    url = asyncio.run(_prepare_index(data_dir))
    samples: list[float] = []
    try:
        for attempt in range(args.repeat + 1):
            out = Path(tempfile.mkdtemp(prefix="bench-rt-out-"))
            try:
                options = BatchOptions(
                    root=root, out=out, data_dir=data_dir, database_url=url,
                    jobs=max(1, args.jobs),
                )
                start = time.perf_counter()
                summary = run_batch(options)
                elapsed = time.perf_counter() - start
                if summary.done != 1 or summary.errors:
                    raise RuntimeError("the benchmark set was not processed cleanly")
            finally:
                shutil.rmtree(out)
            if attempt:  # the first run warms the file cache
                samples.append(elapsed)
    finally:
        _stop_embedded(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    median = statistics.median(samples)
    print(f"set:      {len(files)} objects, {size / 1e6:.0f} MB ({CT_SLICES} CT {SIZE}x{SIZE}, "
          f"{ROIS} ROIs, {BEAMS} beams)")
    print(f"jobs:     {args.jobs}")
    print(f"runs:     {', '.join(f'{s:.2f}' for s in samples)} s")
    print(f"median:   {median:.2f} s  ({len(files) / median:.0f} objects/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
