"""Every real sample file is either de-identified (and readable) or rejected with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.helpers import dcmdump_errors, deidentify, outputs, read, rejected

pytestmark = pytest.mark.integration


def test_each_sample_is_deidentified_or_rejected_with_a_reason(
    tmp_path: Path, index_env: str
) -> None:
    out, data = tmp_path / "out", tmp_path / "data"
    sources = [p for p in SAMPLES.rglob("*") if p.is_file() and p.suffix != ".md"]
    assert deidentify([SAMPLES], out, data, "--extensions", "*", "--jobs", "2") == 0
    refused = rejected(data)
    assert all(row["reason"] and row["reason_code"] for row in refused)
    refused_sources = {row["source"] for row in refused}
    for name in ("MR_truncated.dcm", "zero_length.dcm", "truncated_in_pixel_data.dcm",
                 "garbage_random_4k.dcm", "rtplan_truncated.dcm"):
        assert any(s.endswith(name) for s in refused_sources), name
    # the quarantine keeps a copy of every refused file
    assert len(list((data / "quarantine").glob("0*_*"))) == len(refused)
    written = outputs(out)
    assert len(written) > 200
    for path in written:
        read(path)
        assert dcmdump_errors(path) == "", path.name
    accepted_sources = len(sources) - len(refused_sources & {str(s) for s in sources})
    # several inputs are one instance in different syntaxes: each lands once, by its UID
    assert accepted_sources >= len(written)


def test_originals_are_never_modified(tmp_path: Path, index_env: str) -> None:
    before = {p: p.read_bytes() for p in (SAMPLES / "rt-utils").rglob("*.dcm")}
    assert deidentify([SAMPLES / "rt-utils"], tmp_path / "out", tmp_path / "data") == 0
    assert {p: p.read_bytes() for p in (SAMPLES / "rt-utils").rglob("*.dcm")} == before
