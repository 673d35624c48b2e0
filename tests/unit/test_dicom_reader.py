"""The structural reader accepts every transfer syntax and rejects broken files with reasons."""

from __future__ import annotations

import pytest

from shared.dicom.errors import MissingAttribute, NotDicom, RejectedObject, Truncated
from shared.dicom.parse import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    parse,
)
from tests.conftest import SAMPLES

PYDICOM = SAMPLES / "pydicom" / "test_files"
BROKEN = SAMPLES / "synthetic-broken"


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("rtplan.dcm", IMPLICIT_VR_LITTLE_ENDIAN),
        ("MR_small_bigendian.dcm", EXPLICIT_VR_BIG_ENDIAN),
        ("image_dfl.dcm", DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN),
        ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5"),
        ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),
    ],
)
def test_reads_each_transfer_syntax(name: str, syntax: str) -> None:
    obj = parse((PYDICOM / name).read_bytes())
    assert obj.transfer_syntax_uid == syntax
    assert obj.get_text(0x00080018)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("zero_length.dcm", NotDicom),
        ("plain_text_named_dcm.dcm", NotDicom),
        ("garbage_random_4k.dcm", NotDicom),
        ("truncated_after_dicm.dcm", Truncated),
        ("truncated_in_file_meta.dcm", Truncated),
        ("truncated_in_pixel_data.dcm", Truncated),
        ("truncated_in_dataset.dcm", RejectedObject),
    ],
)
def test_rejects_broken_files_with_a_reason(name: str, error: type[RejectedObject]) -> None:
    with pytest.raises(error) as caught:
        parse((BROKEN / name).read_bytes())
    assert caught.value.reason


def test_truncated_pixel_data_that_pydicom_reads_silently_is_rejected() -> None:
    with pytest.raises(Truncated, match=r"\(7FE0,0010\)"):
        parse((PYDICOM / "MR_truncated.dcm").read_bytes())


def test_object_without_study_uid_is_rejected_naming_the_attribute() -> None:
    with pytest.raises(MissingAttribute, match="SOPClassUID"):
        parse((PYDICOM / "nested_priv_SQ.dcm").read_bytes())


def test_nested_sequences_are_indexed_at_every_depth() -> None:
    obj = parse((SAMPLES / "dicompyler-core" / "example_data" / "rtss.dcm").read_bytes())
    referenced = obj.dataset.elements[0x30060010].items  # ReferencedFrameOfReferenceSequence
    assert referenced
    study = referenced[0].elements[0x30060012].items  # RTReferencedStudySequence
    assert study and 0x30060014 in study[0].elements
