"""The elements of an object as display rows: file meta apart, sequences flattened with
their depth, private and unknown tags named, every value shown as text within its limit,
and broken files refused with a reason (never another exception)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from shared.dicom.elements import ELLIPSIS, Element, ElementsError, list_elements, to_json
from tests import handmade
from tests.conftest import SAMPLES

PYDICOM = SAMPLES / "pydicom" / "test_files"
BROKEN = SAMPLES / "synthetic-broken"


def _rows(path: Path, **kwargs: int) -> list[Element]:
    return list_elements(path.read_bytes(), **kwargs).elements


def _by_tag(rows: list[Element], tag: str) -> Element:
    [row] = [r for r in rows if r.tag == tag]
    return row


def test_file_meta_is_listed_apart_with_the_transfer_syntax() -> None:
    listed = list_elements((PYDICOM / "JPEG2000.dcm").read_bytes())
    assert listed.transfer_syntax_uid == "1.2.840.10008.1.2.4.91"
    assert listed.transfer_syntax_name == "JPEG 2000 Image Compression"
    syntax = _by_tag(listed.file_meta, "(0002,0010)")
    assert (syntax.keyword, syntax.vr, syntax.value) == (
        "TransferSyntaxUID", "UI", "1.2.840.10008.1.2.4.91")
    assert syntax.length == 22  # as encoded, NUL padding included
    assert all(r.tag.startswith("(0002,") for r in listed.file_meta)
    assert not any(r.tag.startswith("(0002,") for r in listed.elements)
    version = _by_tag(listed.file_meta, "(0002,0001)")
    assert (version.vr, version.value) == ("OB", "00 01")


def test_top_level_rows_are_in_tag_order_with_dictionary_names() -> None:
    rows = _rows(PYDICOM / "CT_small.dcm")
    top = [r.tag for r in rows if r.depth == 0]
    assert top == sorted(top)
    name = _by_tag(rows, "(0010,0010)")
    assert (name.keyword, name.name, name.vr, name.vm) == (
        "PatientName", "Patient's Name", "PN", 1)
    assert name.value == "CompressedSamples^CT1"
    assert name.length == 22  # 21 characters and the space padding
    image_type = _by_tag(rows, "(0008,0008)")
    assert image_type.vm == 3 and image_type.value == "ORIGINAL\\PRIMARY\\AXIAL"


def test_binary_numbers_are_decoded_in_the_byte_order_of_the_data_set() -> None:
    for name in ("MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
        rows = _rows(PYDICOM / name)
        assert (_by_tag(rows, "(0028,0010)").value, _by_tag(rows, "(0028,0011)").value) == (
            "64", "64"), name
    rows = _rows(PYDICOM / "rtdose.dcm")  # implicit VR: VRs come from the dictionary
    pointer = _by_tag(rows, "(0028,0009)")
    assert (pointer.vr, pointer.value) == ("AT", "(3004,000C)")
    offsets = _by_tag(rows, "(3004,000C)")
    assert offsets.vr == "DS" and offsets.vm == 15


def test_pixel_data_is_summarised() -> None:
    native = _by_tag(_rows(PYDICOM / "CT_small.dcm"), "(7FE0,0010)")
    assert native.value == "<32768 bytes>" and native.length == 32768
    encapsulated = _by_tag(_rows(PYDICOM / "JPEG2000.dcm"), "(7FE0,0010)")
    assert encapsulated.value.startswith("<") and "encapsulated in 1 fragments" in (
        encapsulated.value)
    assert encapsulated.length > 0


def test_nested_sequence_items_follow_their_sequence_one_level_deeper() -> None:
    rows = _rows(SAMPLES / "dicompyler-core" / "example_data" / "rtss.dcm")
    tags = [r.tag for r in rows]
    start = tags.index("(3006,0010)")  # ReferencedFrameOfReferenceSequence
    sequence, marker = rows[start], rows[start + 1]
    assert (sequence.vr, sequence.depth, sequence.value) == ("SQ", 0, "")
    assert (marker.tag, marker.name, marker.depth) == ("(FFFE,E000)", "Item 1", 1)
    assert rows[start + 2].depth == 1  # the item's first element
    # Contour Image Sequence, three sequences down: as many item markers as its VM says.
    images = next(i for i, r in enumerate(rows) if r.tag == "(3006,0016)")
    contour = rows[images]
    assert contour.depth == 3 and contour.vm == 98
    inside = []
    for row in rows[images + 1:]:
        if row.depth <= contour.depth:
            break
        inside.append(row)
    markers = [r for r in inside if r.tag == "(FFFE,E000)"]
    assert [m.name for m in markers] == [f"Item {n}" for n in range(1, 99)]
    assert {r.depth for r in inside} == {4}
    assert all(m.length == 86 for m in markers)  # two UIDs with their headers


def test_private_tags_name_their_creator_and_dictionary_entry() -> None:
    rows = _rows(PYDICOM / "CT_small.dcm")
    creator = _by_tag(rows, "(0009,0010)")
    assert (creator.keyword, creator.name, creator.value) == ("", "Private Creator",
                                                             "GEMS_IDEN_01")
    known = _by_tag(rows, "(0009,1001)")  # in pydicom's private dictionary for GEMS_IDEN_01
    assert (known.keyword, known.name) == ("", "Full fidelity")
    rows = _rows(SAMPLES / "aptg-2022_DCPT_LET" / "plan03_ramp_full"
                 / "RS1.2.752.243.1.1.20250522124652761.2000.43711.dcm")
    unknown = _by_tag(rows, "(4001,1073)")
    assert (unknown.name, unknown.vr) == ("Private tag", "UN")
    assert unknown.value == "4f 4e 45 52 4d 5f 61 6e 76 65 73 74"


def test_a_private_sequence_sent_as_un_is_opened() -> None:
    rows = _rows(PYDICOM / "UN_sequence.dcm")
    sequence = _by_tag(rows, "(4453,100C)")
    assert (sequence.vr, sequence.vm, sequence.name) == ("SQ", 1, "Private tag")
    inner = [r for r in rows if r.tag == "(0008,1155)"]
    assert inner and inner[0].depth == 3


def test_unknown_standard_tags_and_undecodable_text_are_shown() -> None:
    dataset, sop = handmade.ct()
    dataset.add(0x00080005, "CS", "ISO_IR 192")
    dataset.add(0x00081030, "LO", b"Scan \xff\xfe of")  # not UTF-8
    dataset.add(0x00090010, "LO", "ACME")
    dataset.add(0x00091001, "OB", bytes(range(16)))
    dataset.add(0x00091002, "OB", b"\x00" * 4000)
    dataset.add(0x00290000, "UL", struct.pack("<L", 4))  # group length of a private group
    dataset.add(0x00311234, "UN", b"\x01\x02")  # odd group without creator
    dataset.add(0x00083333, "UN", b"abcd")  # a standard tag no dictionary has
    rows = list_elements(handmade.part10(dataset.encode(), sop)).elements
    # What decodes is shown; the bytes that do not are replacement characters.
    assert _by_tag(rows, "(0008,1030)").value == "Scan \ufffd\ufffd of"
    assert _by_tag(rows, "(0009,1001)").value == " ".join(f"{b:02x}" for b in range(16))
    assert _by_tag(rows, "(0009,1002)").value == "<4000 bytes>"
    assert _by_tag(rows, "(0029,0000)").name == "Group Length"
    assert _by_tag(rows, "(0031,1234)").name == "Private tag"
    assert (_by_tag(rows, "(0008,3333)").name, _by_tag(rows, "(0008,3333)").keyword) == (
        "Unknown", "")


def test_text_is_read_in_the_character_set_of_the_object() -> None:
    rows = _rows(SAMPLES / "pydicom" / "charset_files" / "chrH32.dcm")
    assert _by_tag(rows, "(0010,0010)").value == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
    # In an item: the item's own Specific Character Set (chrSQEncoding, the object's is
    # UTF-8), else the object's (chrSQEncoding1).
    for name in ("chrSQEncoding.dcm", "chrSQEncoding1.dcm"):
        rows = _rows(SAMPLES / "pydicom" / "charset_files" / name)
        patient = _by_tag(rows, "(0010,0010)")
        assert patient.depth == 1 and patient.value == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"


def test_values_are_cut_at_the_limit_with_an_ellipsis() -> None:
    path = SAMPLES / "dicompyler-core" / "example_data" / "rtss.dcm"
    full = _rows(path)
    cut = _rows(path, max_value_chars=20)
    assert len(cut) == len(full)
    contour = next(r for r in cut if r.tag == "(3006,0050)")  # ContourData, long DS
    assert len(contour.value) == 20 and contour.value.endswith(ELLIPSIS)
    whole = next(r for r in full if r.tag == "(3006,0050)")
    assert contour.value[:-1] == whole.value[:19] and contour.vm == whole.vm > 3
    assert all(len(r.value) <= 20 for r in cut)
    with pytest.raises(ValueError):
        list_elements(path.read_bytes(), max_value_chars=0)


def test_deflated_and_implicit_objects_are_listed() -> None:
    listed = list_elements((PYDICOM / "image_dfl.dcm").read_bytes())
    assert listed.transfer_syntax_name == "Deflated Explicit VR Little Endian"
    assert _by_tag(listed.elements, "(0028,0010)").value == "512"
    listed = list_elements((PYDICOM / "rtplan.dcm").read_bytes())
    assert listed.transfer_syntax_name == "Implicit VR Little Endian"
    beams = _by_tag(listed.elements, "(300A,00B0)")
    assert beams.vr == "SQ" and beams.vm >= 1


def test_to_json_gives_the_api_shape() -> None:
    document = to_json(list_elements((PYDICOM / "CT_small.dcm").read_bytes()))
    assert document["transfer_syntax"] == {"uid": "1.2.840.10008.1.2.1",
                                           "name": "Explicit VR Little Endian"}
    keys = {"tag", "keyword", "name", "vr", "vm", "length", "value", "depth"}
    assert document["file_meta"] and document["elements"]
    assert all(set(row) == keys for row in document["file_meta"] + document["elements"])
    assert json.loads(json.dumps(document)) == document


@pytest.mark.parametrize("path", sorted(BROKEN.iterdir()), ids=lambda p: p.name)
def test_broken_files_are_refused_with_a_reason_or_listed(path: Path) -> None:
    try:
        listed = list_elements(path.read_bytes())
    except ElementsError as exc:
        assert str(exc)
        assert "CompressedSamples" not in str(exc)  # the source object's patient name
    else:
        assert listed.elements


@pytest.mark.parametrize(
    "name",
    ["MR_truncated.dcm", "rtplan_truncated.dcm", "badVR.dcm", "no_meta.dcm",
     "meta_missing_tsyntax.dcm", "no_meta_group_length.dcm", "nested_priv_SQ.dcm",
     "ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm"],
)
def test_quirky_pydicom_files_never_raise_anything_else(name: str) -> None:
    try:
        list_elements((PYDICOM / name).read_bytes())
    except ElementsError as exc:
        assert str(exc)


def test_truncation_is_refused_naming_the_element() -> None:
    with pytest.raises(ElementsError, match=r"\(7FE0,0010\)"):
        list_elements((BROKEN / "truncated_in_pixel_data.dcm").read_bytes())
    with pytest.raises(ElementsError, match="empty"):
        list_elements(b"")
