"""References between objects stay resolvable after de-identification."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared.dicom.uids import UidMapper
from tests import synth
from tests.conftest import SAMPLES
from tests.helpers import deidentify, outputs, read, references, rejected, site_secret

pytestmark = pytest.mark.integration


def _check_set(source: Path, out: Path, database_url: str) -> None:
    """One patient, study and frame of reference; every reference that resolved among the
    inputs resolves among the outputs (and nothing else dangles)."""
    mapper = UidMapper(site_secret(database_url))
    inputs = [read(p) for p in sorted(source.rglob("*.dcm"))]
    known = {str(ds.SOPInstanceUID) for ds in inputs}
    dangling_before = {mapper(r) for ds in inputs for r in references(ds) if r not in known}
    written = [read(p) for p in outputs(out)]
    instances = {str(ds.SOPInstanceUID) for ds in written}
    dangling_after = {r for ds in written for r in references(ds) if r not in instances}
    assert dangling_after == dangling_before
    studies = {str(ds.StudyInstanceUID) for ds in written}
    assert len(studies) == 1
    for ds in written:
        assert references(ds, management=True) <= studies
    assert len({str(ds.FrameOfReferenceUID) for ds in written if "FrameOfReferenceUID" in ds}) == 1
    assert len({str(ds.PatientID) for ds in written}) == 1


def test_generated_rt_set_keeps_every_link(tmp_path: Path, index_env: str) -> None:
    source = tmp_path / "in"
    source.mkdir()
    rt = synth.make_rt_set(n_ct=12, n_rois=6, n_beams=3)
    for n, ds in enumerate(rt.all()):
        synth.write(ds, source / f"{n:03d}.dcm")
    out = tmp_path / "out"
    assert deidentify([source], out, tmp_path / "data") == 0
    _check_set(source, out, index_env)
    plan = next(read(p) for p in outputs(out) if read(p).Modality == "RTPLAN")
    dose = next(read(p) for p in outputs(out) if read(p).Modality == "RTDOSE")
    assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID


def test_real_dicompyler_set_keeps_all_98_contour_image_links(
    tmp_path: Path, index_env: str
) -> None:
    source = tmp_path / "in"
    shutil.copytree(SAMPLES / "dicompyler-core", source)
    out = tmp_path / "out"
    assert deidentify([source], out, tmp_path / "data") == 0
    assert not rejected(tmp_path / "data")
    _check_set(source, out, index_env)
    structure_set = next(read(p) for p in outputs(out) if read(p).Modality == "RTSTRUCT")
    frame = structure_set.ReferencedFrameOfReferenceSequence[0]
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    contour_images = {str(i.ReferencedSOPInstanceUID) for i in series.ContourImageSequence}
    written = {str(read(p).SOPInstanceUID) for p in outputs(out)}
    assert len(contour_images) == 98
    assert contour_images <= written


def test_references_among_all_samples_survive(tmp_path: Path, index_env: str) -> None:
    """Whatever resolved among the accepted sample files resolves among the outputs."""
    out, data = tmp_path / "out", tmp_path / "data"
    assert deidentify([SAMPLES], out, data, "--extensions", "*") == 0
    refused = {row["source"] for row in rejected(data)}
    accepted = [
        read(p, force=True) for p in sorted(SAMPLES.rglob("*"))
        if p.is_file() and p.suffix != ".md" and str(p) not in refused
    ]
    mapper = UidMapper(site_secret(index_env))
    originals = {str(ds.SOPInstanceUID) for ds in accepted}
    written = {str(read(p).SOPInstanceUID) for p in outputs(out)}
    expected = {
        mapper(ref) for ds in accepted for ref in references(ds) if ref in originals
    }
    assert len(expected) > 100  # the RT sets and SEG/SR samples hold many references
    assert expected <= written
