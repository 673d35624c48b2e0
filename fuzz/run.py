"""Run the reader and engine fuzzer for a given time and sum up what it found.

    python -m fuzz.run [--minutes 30] [--work fuzz/work] [-- libFuzzer options]

Writes the seeds (``fuzz.seeds``) when they are missing, then runs ``fuzz.deid_fuzz`` in
one process (one core) with the growing corpus in ``WORK/corpus`` and the seeds, restarting
it if libFuzzer stops (a timeout or memory limit; a timed-out input is moved out of the
corpus into ``WORK/artifacts``). At the end it prints, and writes to ``WORK/summary.json``,
the time fuzzed, the inputs tried and every distinct finding with its occurrences and the
file holding its first input and traceback (``WORK/findings``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from fuzz.seeds import write_seeds

HERE = Path(__file__).resolve().parent
_EXECS = re.compile(r"^#(\d+)\s", re.MULTILINE)
_FINAL = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


def _executed(log: str) -> int:
    final = _FINAL.findall(log)
    if final:
        return int(final[-1])
    execs = _EXECS.findall(log)
    return int(execs[-1]) if execs else 0


def _remove_from_corpus(artifact: Path, folders: list[Path], into: Path) -> None:
    """A corpus input that stops libFuzzer would stop every restart: move it out."""
    digest = hashlib.sha1(artifact.read_bytes()).hexdigest()
    for folder in folders:
        for path in folder.iterdir():
            if path.is_file() and hashlib.sha1(path.read_bytes()).hexdigest() == digest:
                path.rename(into / f"from-corpus-{path.name}")


def _merge_counts(findings: Path) -> tuple[int, dict[str, int]]:
    inputs = 0
    merged: dict[str, int] = {}
    for path in sorted(findings.glob("counts-*.json")):
        counts = json.loads(path.read_text())
        inputs += counts["inputs"]
        for signature, n in counts["findings"].items():
            merged[signature] = merged.get(signature, 0) + n
    return inputs, merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--max-len", type=int, default=131072)
    parser.add_argument("--timeout", type=int, default=10, help="seconds per input")
    parser.add_argument("libfuzzer", nargs="*", help="further libFuzzer options (after --)")
    args = parser.parse_args(argv)

    work: Path = args.work.resolve()
    seeds, corpus = work / "seeds", work / "corpus"
    findings, artifacts, logs = work / "findings", work / "artifacts", work / "logs"
    for folder in (corpus, findings, artifacts, logs):
        folder.mkdir(parents=True, exist_ok=True)
    if not seeds.is_dir() or not any(seeds.iterdir()):
        print(f"{write_seeds(seeds)} seeds written to {seeds}")
    for stale in findings.glob("counts-*.json"):
        stale.unlink()

    environment = dict(os.environ, FUZZ_FINDINGS=str(findings), PYTHONWARNINGS="ignore")
    started = time.monotonic()
    deadline = started + args.minutes * 60
    executed = 0
    stops: list[str] = []
    run = 0
    while (remaining := int(deadline - time.monotonic())) > 5:
        run += 1
        log_path = logs / f"run-{run:03d}.log"
        command = [
            sys.executable, "-m", "fuzz.deid_fuzz", str(corpus), str(seeds),
            f"-max_total_time={remaining}", f"-timeout={args.timeout}",
            f"-max_len={args.max_len}", "-rss_limit_mb=4096", "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/", *args.libfuzzer,
        ]
        with log_path.open("w") as log:
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=environment, cwd=HERE.parent)
        text = log_path.read_text(errors="replace")
        executed += _executed(text)
        if code != 0:
            written = _ARTIFACT.findall(text)
            stops.append(f"run {run}: exit {code}, {written[-1] if written else 'no input'}")
            if written:
                _remove_from_corpus(Path(written[-1]), [corpus, seeds], artifacts)
    seconds = time.monotonic() - started
    harness_inputs, merged = _merge_counts(findings)
    summary = {
        "seconds": round(seconds),
        "runs": run,
        "inputs_tried": max(executed, harness_inputs),
        "corpus_size": sum(1 for _ in corpus.iterdir()),
        "libfuzzer_stops": stops,
        "findings": [
            {
                "signature": signature,
                "occurrences": n,
                "first_input": str(findings / (hashlib.sha1(signature.encode()).hexdigest()[:12]
                                               + ".bin")),
            }
            for signature, n in sorted(merged.items(), key=lambda kv: -kv[1])
        ],
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"fuzzed {summary['seconds']} s in {run} run(s): {summary['inputs_tried']} inputs, "
          f"{len(merged)} distinct findings, corpus {summary['corpus_size']}")
    for finding in summary["findings"]:
        print(f"  {finding['occurrences']:>8}  {finding['signature']}")
    for stop in stops:
        print(f"  libFuzzer stopped: {stop}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
