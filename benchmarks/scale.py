"""The size a benchmark runs at: full, or (``BENCHMARK_SMOKE=1``) just large enough to prove
that it runs, as the documentation's commands are checked in the test suite. Smoke runs
keep their generated data apart from the full-size corpora."""

from __future__ import annotations

import os
from pathlib import Path

SMOKE = os.environ.get("BENCHMARK_SMOKE") == "1"


def size(full: int, smoke: int) -> int:
    return smoke if SMOKE else full


def corpus(full: str) -> Path:
    """The corpus folder: ``full``, or a sibling for smoke runs."""
    path = Path(full)
    return path.parent / f"smoke-{path.name}" if SMOKE else path
