"""Shrink an input that shows a finding, keeping the same finding.

    python -m fuzz.minimize INPUT OUTPUT [--seconds 120]

Removes chunks of bytes (halves first, then smaller pieces down to single bytes) and
keeps every removal after which ``fuzz.deid_fuzz`` still reports the same signature
(exception class and place, or the failed property). Writes the smallest input found.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fuzz.deid_fuzz import _run, signature


def finding_of(data: bytes) -> str | None:
    try:
        _run(data)
    except Exception as exc:
        return signature(exc)
    return None


def minimize(data: bytes, wanted: str, seconds: float) -> bytes:
    deadline = time.monotonic() + seconds
    chunk = max(1, len(data) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        start, changed = 0, False
        while start < len(data) and time.monotonic() < deadline:
            candidate = data[:start] + data[start + chunk :]
            if candidate and finding_of(candidate) == wanted:
                data, changed = candidate, True
            else:
                start += chunk
        if not changed:
            chunk //= 2
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.minimize", description=__doc__)
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    data = args.input.read_bytes()
    wanted = finding_of(data)
    if wanted is None:
        print(f"{args.input}: no finding (fixed already?)")
        return 1
    smaller = minimize(data, wanted, args.seconds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(smaller)
    print(f"{len(data)} -> {len(smaller)} bytes, still: {wanted}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
