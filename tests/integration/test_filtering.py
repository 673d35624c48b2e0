"""Filter scripts and the SR / secondary-capture switches in ``anon deidentify``."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.main import main
from tests import synth
from tests.helpers import deidentify, outputs, read, rejected

pytestmark = pytest.mark.integration


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    source = tmp_path / "in"
    source.mkdir()
    for number in (1, 2, 3):
        for n, ds in enumerate(synth.make_ct_series(2, series_number=number)):
            synth.write(ds, source / f"s{number}_{n}.dcm")
    synth.write(synth.make_sr(), source / "report.dcm")
    secondary = synth.make_ct_series(1, series_number=9)[0]
    secondary.ImageType = ["DERIVED", "SECONDARY"]
    synth.write(secondary, source / "secondary.dcm")
    return source


def test_structured_reports_and_secondary_captures_are_refused_by_default(
    tmp_path: Path, index_env: str, mixed: Path
) -> None:
    data = tmp_path / "data"
    assert deidentify([mixed], tmp_path / "out", data) == 0
    reasons = {Path(r["source"]).name: r for r in rejected(data)}
    assert set(reasons) == {"report.dcm", "secondary.dcm"}
    assert all(r["reason_code"] == "filtered" for r in reasons.values())
    assert "SR switch" in reasons["report.dcm"]["reason"]
    assert len(outputs(tmp_path / "out")) == 6


def test_switches_off_accept_both(tmp_path: Path, index_env: str, mixed: Path) -> None:
    assert deidentify([mixed], tmp_path / "out", tmp_path / "data",
                      "--accept-structured-reports", "--accept-secondary-captures") == 0
    assert not rejected(tmp_path / "data")
    assert len(outputs(tmp_path / "out")) == 8


def test_filter_script_keeps_only_matching_series(
    tmp_path: Path, index_env: str, mixed: Path
) -> None:
    script = tmp_path / "filter.txt"
    script.write_text('// the two series the study needs\n'
                      'SeriesNumber.equals("2") + SeriesNumber.equals(3)\n')
    assert deidentify([mixed], tmp_path / "out", tmp_path / "data", "--filter", str(script)) == 0
    assert sorted(int(read(p).SeriesNumber) for p in outputs(tmp_path / "out")) == [2, 2, 3, 3]
    refused = rejected(tmp_path / "data")
    assert {r["reason"] for r in refused if Path(r["source"]).name.startswith("s1_")} == {
        "not accepted by the filter script"}


def test_a_filter_that_cannot_be_parsed_is_refused_before_any_work(
    tmp_path: Path, index_env: str, mixed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "filter.txt"
    script.write_text('Modality.equals("CT") *\n  (SeriesNumber.equals("2")\n')
    code = main(["deidentify", str(mixed), "--out", str(tmp_path / "out"),
                 "--data-dir", str(tmp_path / "data"), "--filter", str(script)])
    assert code == 2
    assert "filter script line 2, column 28: expected ')'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
