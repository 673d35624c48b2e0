"""Planted PHI appears nowhere in what ``anon deidentify`` writes."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from tests import synth
from tests.helpers import dcmdump_errors, deidentify, outputs, read

pytestmark = pytest.mark.integration


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, list]:
    """CT series in four transfer syntaxes, an RT set of another patient and an SR."""
    source = tmp_path / "in"
    source.mkdir()
    objects = []
    syntaxes = [None, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]
    for n, ds in enumerate(synth.make_ct_series(4)):
        synth.write(ds, source / f"ct{n}.dcm", syntaxes[n])
        objects.append(ds)
    for n, ds in enumerate(synth.make_rt_set(3, 2, 2, patient_index=1).all()):
        synth.write(ds, source / f"rt{n}.dcm")
        objects.append(ds)
    sr = synth.make_sr()
    synth.write(sr, source / "sr.dcm")
    objects.append(sr)
    return source, objects


def test_planted_phi_is_nowhere_in_the_output_bytes(
    tmp_path: Path, index_env: str, planted: tuple[Path, list]
) -> None:
    source, objects = planted
    out = tmp_path / "out"
    assert deidentify([source], out, tmp_path / "data", "--jobs", "1",
                      "--accept-structured-reports") == 0
    written = outputs(out)
    assert len(written) == len(objects)
    forbidden = set(synth.PHI_STRINGS) | set(synth.phi_strings(synth.phi_for(1)))
    forbidden |= {uid.encode() for uid in synth.original_uids(objects)}
    forbidden.add(synth.PRIVATE_CREATOR.encode())
    for path in written:
        data = path.read_bytes()
        leaks = [s for s in forbidden if s in data]
        assert not leaks, f"{path.name}: {len(leaks)} planted values left"
        ds = read(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert re.fullmatch(r"\d{6}-\d{6}", ds.PatientID)
        assert ds.PatientName == ds.PatientID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert not any(element.tag.is_private for element in ds.iterall())
        assert dcmdump_errors(path) == ""


def test_pixel_data_transfer_syntax_age_and_sex_are_kept(
    tmp_path: Path, index_env: str, planted: tuple[Path, list]
) -> None:
    source, _ = planted
    out = tmp_path / "out"
    assert deidentify([source], out, tmp_path / "data") == 0
    originals = {read(p).SOPInstanceUID: read(p) for p in source.glob("ct*.dcm")}
    by_number = {int(ds.InstanceNumber): ds for ds in originals.values()}
    checked = 0
    for path in outputs(out):
        ds = read(path)
        if ds.Modality != "CT" or ds.PatientAge != synth.PHI.patient_age:
            continue
        original = by_number[int(ds.InstanceNumber)]
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert ds.PixelData == original.PixelData
        assert ds.PatientSex == synth.PHI.patient_sex
        checked += 1
    assert checked == 4


def test_dates_move_back_by_one_offset_per_patient(
    tmp_path: Path, index_env: str, planted: tuple[Path, list]
) -> None:
    source, _ = planted
    out = tmp_path / "out"
    assert deidentify([source], out, tmp_path / "data") == 0
    offsets: dict[str, set[int]] = {}

    def day(text: str) -> date:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))

    for path in outputs(out):
        ds = read(path)
        if ds.Modality != "CT":
            continue
        phi = synth.PHI if ds.PatientAge == synth.PHI.patient_age else synth.phi_for(1)
        assert phi.study_date == synth.PHI.study_date  # both patients: same original day
        shift = (day(synth.PHI.study_date) - day(ds.StudyDate)).days
        offsets.setdefault(ds.PatientID, set()).add(shift)
        # the interval between study and series date (one day) is kept
        assert (day(ds.SeriesDate) - day(ds.StudyDate)).days == (
            day(synth.PHI.series_date) - day(synth.PHI.study_date)
        ).days
        assert ds.AcquisitionDateTime[8:] == synth.PHI.acquisition_datetime[8:]
        assert ds.StudyTime == synth.PHI.study_time
    assert len(offsets) == 2
    for shifts in offsets.values():
        assert len(shifts) == 1 and 1 <= next(iter(shifts)) <= 3650
