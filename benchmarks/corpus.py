"""Generate the synthetic CT corpora used by the benchmarks.

Usage::

    python -m benchmarks.corpus --out DIR [--small 2000] [--large 500]

Creates ``DIR/small`` (64x64 CT images) and ``DIR/large`` (512x512 CT
images), Explicit VR Little Endian, PHI planted, one study per 100 files and
a few patients. A corpus folder that already holds the requested number of
files is reused; one holding a different number is regenerated.
Generation is deterministic, so a regenerated corpus is byte-identical.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian

from tests import synth

FILES_PER_STUDY = 100
PATIENTS = 4


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    count: int
    size: int  # rows = columns


@dataclass(frozen=True)
class CorpusResult:
    path: Path
    count: int
    generated: bool
    seconds: float


def _existing(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm")) if folder.is_dir() else []


def build_corpus(folder: Path, spec: CorpusSpec) -> CorpusResult:
    """Create ``spec.count`` CT files in ``folder`` unless they are already there."""
    start = time.perf_counter()
    existing = _existing(folder)
    if len(existing) == spec.count:
        return CorpusResult(folder, spec.count, False, time.perf_counter() - start)
    for path in existing:
        path.unlink()
    folder.mkdir(parents=True, exist_ok=True)

    written = 0
    study = 0
    while written < spec.count:
        n = min(FILES_PER_STUDY, spec.count - written)
        series = synth.make_ct_series(
            n,
            rows=spec.size,
            cols=spec.size,
            patient_index=study % PATIENTS,
            study_uid=synth.uid_for("benchmark-corpus", spec.name, study),
            transfer_syntax=ExplicitVRLittleEndian,
        )
        for i, ds in enumerate(series):
            synth.write(ds, folder / f"st{study:04d}_im{i:03d}.dcm")
        written += n
        study += 1
    return CorpusResult(folder, written, True, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.corpus",
        description="Generate synthetic CT corpora (PHI planted) for the benchmarks.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--small", type=int, default=2000, help="number of 64x64 files")
    parser.add_argument("--large", type=int, default=500, help="number of 512x512 files")
    args = parser.parse_args(argv)
    if args.small < 0 or args.large < 0:
        parser.error("counts must be >= 0")

    specs = (CorpusSpec("small", args.small, 64), CorpusSpec("large", args.large, 512))
    for spec in specs:
        if spec.count == 0:
            print(f"{spec.name}: 0 files requested, skipped")
            continue
        result = build_corpus(args.out / spec.name, spec)
        studies = -(-result.count // FILES_PER_STUDY)
        if result.generated:
            print(
                f"{spec.name}: generated {result.count} CT files {spec.size}x{spec.size} "
                f"({studies} studies, {min(studies, PATIENTS)} patients) "
                f"in {result.seconds:.1f} s -> {result.path}"
            )
        else:
            print(f"{spec.name}: {result.count} files already in {result.path}, reused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
