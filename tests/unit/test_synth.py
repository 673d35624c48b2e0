"""Checks that the synthetic DICOM generator produces valid, consistent objects."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from tests import synth

pytestmark = pytest.mark.filterwarnings("error::UserWarning")


def _encode(ds: Dataset, transfer_syntax: str | None = None) -> bytes:
    buffer = io.BytesIO()
    synth.write(ds, buffer, transfer_syntax)
    return buffer.getvalue()


def _read(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


@pytest.fixture(scope="module")
def rt_set() -> synth.RTSet:
    return synth.make_rt_set(n_ct=8, n_rois=4, n_beams=3)


@pytest.fixture(scope="module")
def planted_ct() -> Dataset:
    return synth.make_ct_series(2)[0]


def test_every_object_round_trips(rt_set: synth.RTSet) -> None:
    objects = [*rt_set.all(), synth.make_sr(), *synth.make_ct_series(1, plant=False)]
    for ds in objects:
        data = _encode(ds)
        assert data[128:132] == b"DICM"
        back = _read(data)
        assert back.SOPClassUID == ds.SOPClassUID
        assert back.SOPInstanceUID == ds.SOPInstanceUID
        assert back.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert back.PatientName == ds.PatientName
        assert len(list(synth.walk(back))) == len(list(synth.walk(ds)))
        # writing what was read gives the same bytes again
        assert _encode(back) == data


def test_rt_set_references_resolve(rt_set: synth.RTSet) -> None:
    ct_uids = {str(ds.SOPInstanceUID) for ds in rt_set.ct}
    assert len(ct_uids) == len(rt_set.ct)
    struct, plan, dose = rt_set.rtstruct, rt_set.rtplan, rt_set.rtdose

    contour_refs = {
        str(image.ReferencedSOPInstanceUID)
        for roi in struct.ROIContourSequence
        for contour in roi.ContourSequence
        for image in contour.ContourImageSequence
    }
    assert contour_refs and contour_refs <= ct_uids

    (for_item,) = struct.ReferencedFrameOfReferenceSequence
    (study_item,) = for_item.RTReferencedStudySequence
    (series_item,) = study_item.RTReferencedSeriesSequence
    assert series_item.SeriesInstanceUID == rt_set.ct[0].SeriesInstanceUID
    listed = {str(i.ReferencedSOPInstanceUID) for i in series_item.ContourImageSequence}
    assert listed == ct_uids

    roi_numbers = {int(r.ROINumber) for r in struct.StructureSetROISequence}
    assert {int(r.ReferencedROINumber) for r in struct.ROIContourSequence} == roi_numbers
    assert {int(r.ReferencedROINumber) for r in struct.RTROIObservationsSequence} == roi_numbers

    (plan_to_struct,) = plan.ReferencedStructureSetSequence
    assert plan_to_struct.ReferencedSOPInstanceUID == struct.SOPInstanceUID
    assert plan_to_struct.ReferencedSOPClassUID == struct.SOPClassUID
    assert len(plan.BeamSequence) == 3
    beam_numbers = {int(b.BeamNumber) for b in plan.BeamSequence}
    (group,) = plan.FractionGroupSequence
    assert {int(b.ReferencedBeamNumber) for b in group.ReferencedBeamSequence} == beam_numbers

    (dose_to_plan,) = dose.ReferencedRTPlanSequence
    assert dose_to_plan.ReferencedSOPInstanceUID == plan.SOPInstanceUID
    assert dose_to_plan.ReferencedSOPClassUID == plan.SOPClassUID
    assert dose.DoseSummationType == "PLAN"
    assert len(dose.GridFrameOffsetVector) == int(dose.NumberOfFrames)

    objects = rt_set.all()
    for_uids = {str(ds.FrameOfReferenceUID) for ds in objects}
    for_uids |= {str(r.ReferencedFrameOfReferenceUID) for r in struct.StructureSetROISequence}
    for_uids.add(str(for_item.FrameOfReferenceUID))
    assert len(for_uids) == 1
    assert len({str(ds.StudyInstanceUID) for ds in objects}) == 1
    assert str(study_item.ReferencedSOPInstanceUID) == str(objects[0].StudyInstanceUID)
    assert len({str(ds.PatientID) for ds in objects}) == 1
    assert len({str(ds.SOPInstanceUID) for ds in objects}) == len(objects)


def test_every_phi_string_is_planted(planted_ct: Dataset) -> None:
    data = _encode(planted_ct)
    missing = [s for s in synth.PHI_STRINGS if s not in data]
    assert not missing


def test_unplanted_ct_contains_no_phi() -> None:
    ds = synth.make_ct_series(1, plant=False)[0]
    data = _encode(ds)
    assert [s for s in synth.PHI_STRINGS if s in data] == []
    assert "PatientName" in ds and ds.PatientName == ""


def test_phi_locations(planted_ct: Dataset) -> None:
    phi = synth.PHI
    block = planted_ct.private_block(synth.PRIVATE_GROUP, synth.PRIVATE_CREATOR)
    assert block[0x10].value == phi.patient_name
    assert block[0x11].value == phi.patient_id
    assert block[0x12].value[0].PatientName == phi.patient_name
    (request,) = planted_ct.RequestAttributesSequence
    assert request.AccessionNumber == phi.accession_number
    assert request.ScheduledProtocolCodeSequence[0].CodeValue
    (original,) = planted_ct.OriginalAttributesSequence
    (modified,) = original.ModifiedAttributesSequence
    assert modified.PatientName == phi.patient_name
    assert modified.PatientBirthDate == phi.birth_date
    assert planted_ct.file_meta.SourceApplicationEntityTitle == "QUILLONAE"
    assert planted_ct.PatientAge == "057Y"
    assert b"057Y" not in synth.PHI_STRINGS


def test_patients_differ() -> None:
    first, second = synth.phi_for(0), synth.phi_for(1)
    assert first is synth.PHI
    assert first.patient_name != second.patient_name
    assert first.patient_id != second.patient_id
    assert first.birth_date != second.birth_date
    other = synth.make_ct_series(1, patient_index=1)[0]
    assert other.PatientID == second.patient_id
    assert other.StudyInstanceUID != synth.make_ct_series(1)[0].StudyInstanceUID
    data = _encode(other)
    assert synth.PHI.patient_id.encode() not in data
    assert all(s in data for s in second.strings())


def test_generation_is_deterministic() -> None:
    first = [_encode(ds) for ds in synth.make_rt_set(n_ct=3, n_rois=2, n_beams=1).all()]
    second = [_encode(ds) for ds in synth.make_rt_set(n_ct=3, n_rois=2, n_beams=1).all()]
    assert first == second
    assert _encode(synth.make_sr()) == _encode(synth.make_sr())


def test_original_uids(rt_set: synth.RTSet) -> None:
    uids = synth.original_uids(rt_set.all())
    for ds in rt_set.all():
        assert str(ds.SOPInstanceUID) in uids
        assert str(ds.SeriesInstanceUID) in uids
    assert str(rt_set.ct[0].StudyInstanceUID) in uids
    assert str(rt_set.ct[0].FrameOfReferenceUID) in uids
    assert all(not u.startswith("1.2.840.10008.") for u in uids)
    assert all(UID(u).is_valid for u in uids)
    assert not any(u.encode() in s or s in u.encode() for u in uids for s in synth.PHI_STRINGS)


def test_sr_content_tree() -> None:
    sr = synth.make_sr()
    items = list(synth.walk(sr))
    value_types = {e.value for e in items if e.keyword == "ValueType"}
    assert {"CONTAINER", "TEXT", "PNAME", "DATE", "UIDREF"} <= value_types
    texts = [e.value for e in items if e.keyword == "TextValue"]
    assert texts and all(synth.PHI.patient_name in t for t in texts)

    def depth(ds: Dataset) -> int:
        return 1 + max((depth(i) for i in ds.get("ContentSequence", [])), default=0)

    assert depth(sr) >= 4
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    refs = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence
    ct = synth.make_ct_series(3)
    assert [str(r.ReferencedSOPInstanceUID) for r in refs] == [str(d.SOPInstanceUID) for d in ct]
    assert evidence.StudyInstanceUID == ct[0].StudyInstanceUID


@pytest.mark.parametrize("transfer_syntax", synth.SUPPORTED_TRANSFER_SYNTAXES)
def test_transfer_syntaxes(transfer_syntax: UID, rt_set: synth.RTSet, tmp_path: Path) -> None:
    for ds in (rt_set.ct[1], rt_set.rtdose):
        expected = ds.pixel_array.copy()
        path = tmp_path / f"{ds.Modality}.dcm"
        synth.write(ds, path, transfer_syntax)
        back = dcmread(path)
        assert back.file_meta.TransferSyntaxUID == transfer_syntax
        assert back.PatientName == ds.PatientName
        assert back.SOPInstanceUID == ds.SOPInstanceUID
        np.testing.assert_array_equal(back.pixel_array, expected)
        # the in-memory object is left as it was
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        np.testing.assert_array_equal(ds.pixel_array, expected)
        dcmdump = shutil.which("dcmdump")
        if dcmdump:
            result = subprocess.run(
                [dcmdump, "-q", str(path)], capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, result.stderr
            assert "E:" not in result.stderr


def test_generated_big_endian_series(tmp_path: Path) -> None:
    big = synth.make_ct_series(1, transfer_syntax="1.2.840.10008.1.2.2")[0]
    little = synth.make_ct_series(1)[0]
    np.testing.assert_array_equal(big.pixel_array, little.pixel_array)
    synth.write(big, tmp_path / "be.dcm")
    back = dcmread(tmp_path / "be.dcm")
    assert not back.is_little_endian
    np.testing.assert_array_equal(back.pixel_array, little.pixel_array)
