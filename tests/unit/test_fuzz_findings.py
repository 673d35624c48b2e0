"""Every input the fuzzers found a defect with (``fuzz/crashes``) now de-identifies or is
refused with a reason, and leaves no planted value in any output: the fuzzing property,
run on them by the test suite so that no finding comes back."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz import deid_fuzz

CRASHES = sorted((Path(__file__).resolve().parents[2] / "fuzz" / "crashes").glob("*.dcm"))


def test_there_are_findings_to_replay() -> None:
    assert len(CRASHES) >= 10


@pytest.mark.parametrize("path", CRASHES, ids=[p.stem for p in CRASHES])
def test_a_fuzzing_finding_no_longer_reproduces(path: Path) -> None:
    deid_fuzz._run(path.read_bytes())  # raises Finding (or worse) if it does
