"""Speed of ``anon deidentify``'s engine against a bare pydicom loop, in one process.

    python -m benchmarks.deidentify [--corpus benchmarks/corpus] [--repeat 3]

Both sides read every file of a generated corpus and write one output file per input on
the same disk. The bare loop only reads, changes PatientName and writes; the engine path is
the one ``anon deidentify --jobs 1`` runs per file: validate, look up the patient in the
PHI index (PostgreSQL: DATABASE_URL, else an embedded server), apply the full profile,
write into the output tree. Figures are the median of ``--repeat`` runs, after a warm-up
run that fills the operating system's file cache.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom

from benchmarks.corpus import CorpusSpec, build_corpus
from services.cli.deidentify_folder import JobSettings, _Worker, prepare_index
from shared.deid.profile import ProfileOptions

CORPORA = (CorpusSpec("small", 2000, 64), CorpusSpec("large", 500, 512))


def bare_pydicom(files: list[Path], out: Path) -> None:
    for n, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.PatientName = "ANONYMOUS"
        ds.save_as(out / f"{n}.dcm")


def engine(worker: _Worker) -> Callable[[list[Path], Path], None]:
    def run(files: list[Path], out: Path) -> None:
        worker.settings = JobSettings(worker.settings.database_url, worker.settings.options, out)
        for n, path in enumerate(files):
            result = worker.process(n, path)
            if result.code:
                raise RuntimeError(f"{path.name} rejected: {result.reason}")

    return run


def timed(run: Callable[[list[Path], Path], None], files: list[Path], repeat: int) -> float:
    samples = []
    for attempt in range(repeat + 1):
        out = Path(tempfile.mkdtemp(prefix="bench-out-"))
        try:
            start = time.perf_counter()
            run(files, out)
            elapsed = time.perf_counter() - start
        finally:
            shutil.rmtree(out)
        if attempt:  # the first run warms the file cache
            samples.append(elapsed)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("benchmarks/corpus"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="bench-index-"))
    url = asyncio.run(prepare_index(data_dir, None, None)).url
    worker = _Worker(JobSettings(url, ProfileOptions.ricord(), data_dir / "out"))
    results = []
    try:
        for spec in CORPORA:
            corpus = build_corpus(args.corpus / spec.name, spec)
            files = sorted(corpus.path.glob("*.dcm"))
            bare = timed(bare_pydicom, files, args.repeat)
            ours = timed(engine(worker), files, args.repeat)
            results.append({
                "corpus": f"{len(files)} CT {spec.size}x{spec.size}",
                "bare_pydicom_s": round(bare, 3),
                "engine_s": round(ours, 3),
                "bare_pydicom_files_per_s": round(len(files) / bare, 1),
                "engine_files_per_s": round(len(files) / ours, 1),
                "ratio": round(bare / ours, 2),
            })
    finally:
        worker.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    header = f"{'corpus':<22}{'bare pydicom':>14}{'engine':>10}{'files/s':>16}{'ratio':>8}"
    print(header)
    for r in results:
        print(f"{r['corpus']:<22}{r['bare_pydicom_s']:>12.3f} s{r['engine_s']:>8.3f} s"
              f"{r['engine_files_per_s']:>16.1f}{r['ratio']:>8.2f}")
    print("ratio = bare pydicom time / engine time (>= 1.0: the engine is at least as fast)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
