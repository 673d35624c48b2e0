"""The engine under each kind of option, on objects built in memory."""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset

from shared.deid.context import Pseudonyms
from shared.deid.engine import Engine
from shared.deid.options import ProfileOptions
from shared.deid.profile import build_profile
from tests import synth

PSEUDONYMS = Pseudonyms("123456-000007", "123456-000007", 30, "0000000000000042")


def _run(ds: Dataset, options: ProfileOptions | None = None) -> Dataset:
    buffer = io.BytesIO()
    synth.write(ds, buffer)
    engine = Engine(build_profile(options), b"s" * 32)
    result = engine.deidentify(engine.read(buffer.getvalue()), PSEUDONYMS)
    return pydicom.dcmread(io.BytesIO(result.data))


def _ct() -> Dataset:
    return synth.make_ct_series(1)[0]


def test_safe_private_attributes_survive_only_with_the_option() -> None:
    ds = _ct()
    block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
    block.add_new(0x00, "DS", "1.5")  # SUV factor: in Table E.3.10-1
    block.add_new(0x01, "LO", synth.PHI.patient_name)  # not in the table
    kept = _run(ds, ProfileOptions(retain_safe_private=True))
    assert kept[0x7053, 0x1000].value == "1.5"
    assert (0x7053, 0x1001) not in kept
    assert (0x0009, 0x0010) not in kept  # an unsafe creator goes entirely
    removed = _run(ds)
    assert not any(e.tag.is_private for e in removed.iterall())


def test_clean_descriptors_removes_identifying_terms_and_keeps_the_rest() -> None:
    ds = _ct()
    ds.StudyDescription = f"CT chest for {synth.PHI.patient_id} Zyxwerth"
    cleaned = _run(ds, ProfileOptions(
        retain_longitudinal_modified_dates=True, retain_patient_characteristics=True,
        clean_descriptors=True))
    assert "CT chest for" in cleaned.StudyDescription
    assert synth.PHI.patient_id not in cleaned.StudyDescription
    assert "Zyxwerth" not in cleaned.StudyDescription
    assert "StudyDescription" not in _run(ds)  # Basic Profile: X


def test_structured_report_text_is_dummied_by_default_and_cleaned_with_the_option() -> None:
    sr = synth.make_sr()
    default = _run(sr)
    texts = [item.TextValue for item in _items(default) if "TextValue" in item]
    assert texts and all(t == "ANONYMIZED" for t in texts)
    cleaned = _run(sr, ProfileOptions(clean_structured_content=True,
                                      retain_longitudinal_modified_dates=True))
    cleaned_texts = [item.TextValue for item in _items(cleaned) if "TextValue" in item]
    assert cleaned_texts
    for text in cleaned_texts:
        assert synth.PHI.patient_id not in text and "Zyxwerth" not in text


def _items(ds: Dataset) -> list[Dataset]:
    found = [ds]
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                found.extend(_items(item))
    return found


def test_retain_uids_and_full_dates_leave_them_as_they_were() -> None:
    ds = _ct()
    out = _run(ds, ProfileOptions(retain_uids=True, retain_longitudinal_full_dates=True))
    assert out.SOPInstanceUID == ds.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert out.StudyDate == ds.StudyDate
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_undefined_and_defined_length_sequences_both_come_out_readable() -> None:
    ds = _ct()
    out = _run(ds)
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert {i.CodeValue for i in out.DeidentificationMethodCodeSequence} == {
        "113100", "113107", "113108"}
