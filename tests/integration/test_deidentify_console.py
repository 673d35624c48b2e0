"""What ``anon deidentify`` prints: the counts, the first refused files with their
reasons, the path of the quarantine report."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.main import main
from tests import synth
from tests.helpers import rejected

pytestmark = pytest.mark.integration


def _run(source: str, data: Path, *extra: str) -> int:
    return main(["deidentify", source, "--out", str(data.parent / "out"),
                 "--data-dir", str(data), "--quarantine", str(data / "quarantine"),
                 "--no-progress", *extra])


def _listing(printed: str) -> list[str]:
    """The lines between the counts and the report's path."""
    lines = printed.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("files/s:")) + 1
    end = next((n for n, line in enumerate(lines) if line.startswith("rejected files and")),
               len(lines))
    return lines[start:end]


def test_each_refused_file_is_printed_with_the_reason_of_the_report(
    tmp_path: Path, index_env: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for n, ds in enumerate(synth.make_ct_series(2)):
        synth.write(ds, source / f"ct_{n}.dcm")
    synth.write(synth.make_sr(), source / "report.dcm")
    secondary = synth.make_ct_series(1, series_number=9)[0]
    secondary.ImageType = ["DERIVED", "SECONDARY"]
    synth.write(secondary, source / "secondary.dcm")
    monkeypatch.chdir(tmp_path)  # the paths are printed as they were given

    assert _run("in", tmp_path / "data") == 0
    printed = capsys.readouterr().out
    report = rejected(tmp_path / "data")
    assert [r["source"] for r in report] == ["in/report.dcm", "in/secondary.dcm"]
    assert _listing(printed) == [f"  {r['source']}: {r['reason']}" for r in report]
    assert printed.splitlines()[-1] == (
        f"rejected files and reasons: {tmp_path / 'data' / 'quarantine' / 'rejected.csv'}")
    assert synth.PHI.patient_name.split("^")[0] not in printed
    assert synth.PHI.patient_id not in printed


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_only_the_first_five_refused_files_are_printed_then_how_many_more(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for n, ds in enumerate(synth.make_ct_series(30)):  # enough files for a pool of two
        synth.write(ds, source / f"ct_{n:02d}.dcm")
    for n in range(8):
        (source / f"note_{n}.dcm").write_text("not an image\n")

    assert _run(str(source), tmp_path / "data", "--jobs", jobs) == 0
    printed = capsys.readouterr().out
    assert "rejected:  8" in printed.splitlines()
    report = rejected(tmp_path / "data")
    assert len(report) == 8
    assert _listing(printed) == [
        *(f"  {r['source']}: {r['reason']}" for r in report[:5]), "  ... and 3 more"]
    assert all(r["reason_code"] == "not-dicom" and r["reason"] for r in report)


def test_nothing_refused_prints_no_listing_and_no_report(
    tmp_path: Path, index_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    synth.write(synth.make_ct_series(1)[0], source / "ct.dcm")

    assert _run(str(source), tmp_path / "data") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "accepted:  1" and lines[1] == "rejected:  0"
    assert lines[-1].startswith("files/s:")
    assert not (tmp_path / "data" / "quarantine").exists()
