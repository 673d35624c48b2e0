"""PHI hidden by encodings: sequences sent as UN, values without a VR, group 0002 in a bare
data set, overlays' free text, and text in other character sets. Every object here is
written by hand, byte for byte, and every check looks at the output bytes as well as at
what pydicom reads back from them."""

from __future__ import annotations

import io
import tracemalloc

import pydicom
import pytest
from pydicom.dataset import Dataset

from shared.deid.context import Pseudonyms
from shared.deid.engine import Engine
from shared.deid.options import ProfileOptions
from shared.deid.profile import build_profile
from shared.dicom.errors import LimitExceeded
from shared.dicom.parse import Limits, parse
from tests import handmade
from tests.handmade import explicit, implicit, item, un_sequence

PSEUDONYMS = Pseudonyms("123456-000007", "123456-000007", 30, "0000000000000042")
NESTED_NAME = b"Nested^Planted"
DEEPER_NAME = b"Deeper^Planted"
REFERENCED_UID = b"1.2.826.0.1.3680043.8.498.1112223334"
ACQUISITION_DATE = b"20190412"
START_DATETIME = b"20190412083000"


def _run(data: bytes, options: ProfileOptions | None = None) -> tuple[bytes, Dataset]:
    engine = Engine(build_profile(options), b"s" * 32)
    result = engine.deidentify(engine.read(data), PSEUDONYMS)
    ds = pydicom.dcmread(io.BytesIO(result.data))
    for _ in ds.iterall():  # pydicom reads UN sequences back as sequences
        pass
    return result.data, ds


def _names(ds: Dataset) -> list[str]:
    return [str(e.value) for e in ds.iterall() if e.keyword == "PatientName"]


def _radiopharmaceutical_item(defined: bool) -> bytes:
    """An item of (0054,0016) with a date-time, a name and a UN sequence one level down."""
    deeper = item(implicit(0x00100010, DEEPER_NAME), defined)
    body = (implicit(0x00080022, ACQUISITION_DATE)
            + implicit(0x00100010, NESTED_NAME)
            + implicit(0x00181078, START_DATETIME)
            + implicit(0x00540300, b"".join([deeper]) if defined else deeper
                       + handmade.sequence_end(),
                       length=None if defined else handmade.UNDEFINED))
    return item(body, defined)


def _object_with_un_sequences(defined: bool) -> bytes:
    ds, sop = handmade.ct()
    referenced = item(implicit(0x00081150, handmade.CT_IMAGE_STORAGE.encode() + b"\x00")
                      + implicit(0x00081155, REFERENCED_UID)
                      + implicit(0x00100010, NESTED_NAME), defined)
    ds.raw(0x00081140, un_sequence(0x00081140, [referenced], defined))
    ds.raw(0x00540016, un_sequence(0x00540016, [_radiopharmaceutical_item(defined)], defined))
    return handmade.part10(ds.encode(), sop)


@pytest.mark.parametrize("defined", [True, False], ids=["defined-length", "undefined-length"])
def test_sequences_sent_as_un_are_de_identified_inside(defined: bool) -> None:
    data, ds = _run(_object_with_un_sequences(defined))
    for planted in (NESTED_NAME, DEEPER_NAME, REFERENCED_UID, ACQUISITION_DATE, b"Planted"):
        assert planted not in data
    assert set(_names(ds)) == {"123456-000007"}
    reference = ds.ReferencedImageSequence[0]
    assert reference.ReferencedSOPInstanceUID.startswith("2.25.")
    radiopharmaceutical = ds.RadiopharmaceuticalInformationSequence[0]
    assert radiopharmaceutical.RadiopharmaceuticalStartDateTime == "20190313083000"
    assert ds.PatientIdentityRemoved == "YES"


def test_known_attributes_sent_as_un_take_their_dictionary_vr() -> None:
    ds, sop = handmade.ct()
    ds.raw(0x00080022, explicit(0x00080022, "UN", ACQUISITION_DATE))  # Acquisition Date
    ds.raw(0x00140104, explicit(0x00140104, "UN", b"Reviewer^Planted"))  # a PN E.1-1 omits
    ds.raw(0x00181000, explicit(0x00181000, "UN", b"SERIAL-PLANTED"))  # Device Serial Number
    ds.raw(0x00200052, explicit(0x00200052, "UN", REFERENCED_UID))  # Frame of Reference UID
    data, out = _run(handmade.part10(ds.encode(), sop))
    for planted in (ACQUISITION_DATE, b"Reviewer", b"SERIAL-PLANTED", REFERENCED_UID):
        assert planted not in data
    assert out.AcquisitionDate == "20190313"
    assert out.FrameOfReferenceUID.startswith("2.25.")


def test_an_unknown_tag_is_read_as_items_when_its_value_is_items_and_else_removed() -> None:
    ds, sop = handmade.ct()
    as_items = item(implicit(0x00100010, NESTED_NAME) + implicit(0x00100030, b"19500101"))
    ds.raw(0x00769010, explicit(0x00769010, "UN", as_items))  # not in the dictionary
    ds.raw(0x00769012, explicit(0x00769012, "UN", b"Opaque^Planted free text"))
    data, out = _run(handmade.part10(ds.encode(), sop))
    assert NESTED_NAME not in data and b"19500101" not in data
    assert b"Opaque" not in data
    assert (0x0076, 0x9012) not in out
    assert out[0x00769010].value[0].PatientName == "123456-000007"


def test_implicit_vr_private_sequence_kept_as_safe_is_de_identified_inside() -> None:
    creator = b"Philips PET Private Group"  # creator of safe attributes in E.3.10-1
    ds, sop = handmade.ct(explicit_vr=False)
    ds.raw(0x70530010, implicit(0x70530010, creator))
    ds.raw(0x70531000, implicit(0x70531000, b"1.5 "))  # SUV factor, safe
    # Kept as safe by its creator and element, but holding items: the profile applies inside.
    ds.raw(0x70531009, implicit(0x70531009, item(implicit(0x00100010, NESTED_NAME))))
    ds.raw(0x70531002, implicit(0x70531002, b"Opaque^Planted"))
    data, out = _run(handmade.part10(ds.encode(), sop, handmade.IMPLICIT_LE),
                     ProfileOptions(retain_safe_private=True))
    assert NESTED_NAME not in data and b"Opaque" not in data
    assert (0x7053, 0x1000) in out and (0x7053, 0x1009) in out


def test_group_0002_in_a_bare_data_set_never_reaches_the_output() -> None:
    ds, _ = handmade.ct()
    ds.raw(0x00020010, explicit(0x00020010, "UI", handmade.EXPLICIT_LE.encode()))
    ds.raw(0x00020016, explicit(0x00020016, "AE", b"PLANTEDAE"))
    ds.raw(0x00020102, explicit(0x00020102, "OB", b"PlantedPrivateInfo"))
    data, out = _run(ds.encode())
    assert b"PLANTEDAE" not in data and b"PlantedPrivateInfo" not in data
    assert set(out.file_meta.keys()) == {
        0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013}
    assert not [e for e in out if e.tag.group == 0x0002]
    assert data.count(b"\x02\x00\x10\x00UI") == 1  # one transfer syntax, in the meta


def test_file_meta_inside_a_sequence_item_is_removed() -> None:
    ds, sop = handmade.ct()
    inner = item(implicit(0x00020016, b"PLANTEDAE") + implicit(0x00081155, REFERENCED_UID))
    ds.raw(0x00081140, un_sequence(0x00081140, [inner]))
    data, _ = _run(handmade.part10(ds.encode(), sop))
    assert b"PLANTEDAE" not in data


def test_overlay_description_and_label_are_removed_unless_graphics_are_cleaned() -> None:
    ds, sop = handmade.ct()
    ds.add(0x60000022, "LO", "Overlay by Planted^Patient")
    ds.add(0x60001500, "LO", "Planted label")
    ds.add(0x60020022, "LO", "Second overlay Planted")
    data, out = _run(handmade.part10(ds.encode(), sop))
    assert b"Planted" not in data
    assert (0x6000, 0x0022) not in out and (0x6000, 0x1500) not in out
    cleaned, _ = _run(handmade.part10(ds.encode(), sop), ProfileOptions(clean_graphics=True))
    assert b"Planted" not in cleaned


@pytest.mark.parametrize("case", list(handmade.CHARSET_NAMES))
def test_no_encoding_of_a_non_ascii_name_survives_and_text_is_not_garbled(case: str) -> None:
    charset, name, description, kept = handmade.CHARSET_NAMES[case]
    data, out = _run(handmade.object_in_charset(charset, name, description),
                     ProfileOptions(retain_longitudinal_modified_dates=True,
                                    retain_patient_characteristics=True,
                                    clean_descriptors=True))
    for part in handmade.name_parts(name):
        for encoded in handmade.encodings_of(part):
            assert encoded not in data, f"an encoding of a name part survived ({case})"
    for cleaned in (out.StudyDescription, out.SeriesDescription, out.PrescriptionNotes):
        assert cleaned.startswith(kept)  # the words around the name, not mojibake
    assert out.PatientName == "123456-000007"


def test_latin_1_description_comes_out_as_it_went_in() -> None:
    latin_1 = handmade.object_in_charset(["ISO_IR 100"], "Müller^Jürgen", "Açaí energy scan")
    data, out = _run(latin_1, ProfileOptions(clean_descriptors=True))
    assert out.StudyDescription == "Açaí energy scan"
    assert "Açaí energy scan".encode("latin-1") in data


def test_a_deflated_file_that_inflates_beyond_the_limit_is_refused_before_inflating() -> None:
    import zlib

    ds, sop = handmade.ct()
    ds.raw(0x7FE00010, explicit(0x7FE00010, "OB", b"\x00" * (8 << 20)))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(ds.encode()) + compressor.flush()
    data = handmade.part10(deflated, sop, handmade.DEFLATED_LE)
    assert len(data) < 20_000
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded, match="MAX_INFLATED_BYTES"):
            parse(data, limits=Limits(max_inflated_bytes=1 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert parse(data, limits=Limits()).dataset.elements  # within the default limit


def test_sequences_nested_thousands_deep_are_refused_with_a_reason() -> None:
    inner = implicit(0x00100010, NESTED_NAME)
    for _ in range(3000):
        inner = implicit(0x00081140, item(inner, defined=False) + handmade.sequence_end(),
                         length=handmade.UNDEFINED)
    ds, sop = handmade.ct(explicit_vr=False)
    ds.raw(0x00081140, inner)
    data = handmade.part10(ds.encode(), sop, handmade.IMPLICIT_LE)
    with pytest.raises(LimitExceeded, match="nested more than 64 levels"):
        parse(data)
    with pytest.raises(LimitExceeded):
        parse(data, limits=Limits(max_nesting_depth=10))


def test_an_undefined_length_un_value_under_a_dummy_rule_costs_no_memory() -> None:
    ds, sop = handmade.ct()
    empty_sequence = handmade.sequence_end()
    ds.raw(0x00420011, explicit(0x00420011, "UN", empty_sequence, length=handmade.UNDEFINED))
    data = handmade.part10(ds.encode(), sop)
    assert len(data) < 1000
    tracemalloc.start()
    try:
        _run(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_an_object_larger_than_the_limit_is_refused() -> None:
    ds, sop = handmade.ct()
    data = handmade.part10(ds.encode(), sop)
    with pytest.raises(LimitExceeded, match="MAX_OBJECT_BYTES"):
        parse(data, limits=Limits(max_object_bytes=100))


def test_dates_uids_and_names_sent_under_another_string_vr_are_treated_as_such() -> None:
    ds, sop = handmade.ct()
    ds.add(0x00140102, "LO", "20190412")  # Secondary Review Date (not in E.1-1), as LO
    ds.add(0x00081155, "SH", REFERENCED_UID.decode())  # a Referenced SOP Instance UID as SH
    ds.add(0x00142006, "LO", "Evaluator^Planted")  # Evaluator Name (PN) as LO
    data, _ = _run(handmade.part10(ds.encode(), sop))
    for planted in (ACQUISITION_DATE, REFERENCED_UID, b"Evaluator"):
        assert planted not in data


def test_a_sequence_sent_as_bytes_is_read_as_items_and_removed_when_it_cannot_be() -> None:
    ds, sop = handmade.ct()
    broken = item(implicit(0x00100010, NESTED_NAME))[:-4]  # the item is cut short
    ds.raw(0x00081140, explicit(0x00081140, "UN", broken))
    as_binary = item(implicit(0x00100010, DEEPER_NAME))
    ds.raw(0x00081115, explicit(0x00081115, "OB", as_binary))  # a sequence sent as OB
    data, out = _run(handmade.part10(ds.encode(), sop))
    assert NESTED_NAME not in data and DEEPER_NAME not in data
    assert "ReferencedImageSequence" not in out  # unreadable: removed
    assert out.ReferencedSeriesSequence[0].PatientName == "123456-000007"  # read as items


def test_a_specific_character_set_that_names_no_character_set_is_read_byte_for_byte() -> None:
    ds, sop = handmade.ct()
    ds.raw(0x00080005, explicit(0x00080005, "CS", b"\x00\x00\xff\xfe00"))
    ds.add(0x00081030, "LO", "Planted study")
    engine = Engine(build_profile(), b"s" * 32)
    data = engine.deidentify(engine.read(handmade.part10(ds.encode(), sop)), PSEUDONYMS).data
    assert b"Planted" not in data


def test_free_text_comments_the_table_does_not_list_are_removed_or_cleaned() -> None:
    ds, sop = handmade.ct()
    ds.add(0x00400400, "LT", "Call Planted^Patient at home")  # Comments on the SPS
    ds.add(0x300A0402, "ST", "Planted wears a ring")  # Setup Image Comment
    data, _ = _run(handmade.part10(ds.encode(), sop))
    assert b"Planted" not in data
    _, cleaned = _run(handmade.part10(ds.encode(), sop), ProfileOptions(clean_descriptors=True))
    assert cleaned.CommentsOnTheScheduledProcedureStep == "Call  at home"


def test_a_time_that_is_not_a_time_is_emptied() -> None:
    ds, sop = handmade.ct()
    ds.add(0x00080030, "TM", "083000.25")  # Study Time: kept
    ds.add(0x00080031, "TM", "20190412083000")  # Series Time holding a date-time
    ds.add(0x00181072, "TM", "10:30:00")  # an ACR-NEMA time: kept
    data, out = _run(handmade.part10(ds.encode(), sop))
    assert ACQUISITION_DATE not in data
    assert out.StudyTime == "083000.25" and out.SeriesTime == ""
    assert out.RadiopharmaceuticalStartTime == "10:30:00"


def test_a_value_whose_length_swallows_the_next_elements_is_not_kept() -> None:
    ds, sop = handmade.ct()
    swallowed = explicit(0x00080050, "SH", b"ACC-PLANTED") + explicit(
        0x00080090, "PN", b"Referring^Planted")
    ds.raw(0x00080030, explicit(0x00080030, "TM", b"083000") + swallowed)
    data = ds.encode()
    # The time's length now covers the two elements after it.
    start = data.index(b"\x08\x00\x30\x00TM")
    data = data[:start + 6] + len(b"083000" + swallowed).to_bytes(2, "little") + \
        data[start + 8:]
    out_bytes, _ = _run(handmade.part10(data, sop))
    assert b"PLANTED" not in out_bytes and b"Planted" not in out_bytes


def test_an_opaque_sequence_is_removed_even_where_its_rule_is_keep() -> None:
    ds, sop = handmade.ct()
    broken = item(implicit(0x00100010, NESTED_NAME))[:-4]
    ds.raw(0x00081140, explicit(0x00081140, "UN", broken))  # K under Retain UIDs
    data, _ = _run(handmade.part10(ds.encode(), sop), ProfileOptions(retain_uids=True))
    assert NESTED_NAME not in data


def test_a_sop_instance_uid_with_control_bytes_is_refused() -> None:
    from shared.dicom.errors import Malformed

    ds, _ = handmade.ct()
    ds.raw(0x00080018, explicit(0x00080018, "UI", b"1.2.3\x00\x10\x00SH\x08\x00PLANTED"))
    with pytest.raises(Malformed, match="SOPInstanceUID is not a UID"):
        parse(handmade.part10(ds.encode(), "1.2.3"))


def test_site_scripts_read_values_of_an_object_with_an_unknown_character_set() -> None:
    from shared.deid.elements import element_ref, encodings, find, value

    ds, sop = handmade.ct()
    ds.raw(0x00080005, explicit(0x00080005, "CS", b"\\IS\x00\x00R 87"))
    obj = parse(handmade.part10(ds.encode(), sop))
    assert encodings(obj) == ["iso8859"]
    assert value(obj, find(obj, element_ref("PatientName"))) == "Planted^Patient"


def test_a_transfer_syntax_uid_that_is_no_uid_never_reaches_the_output() -> None:
    ds, sop = handmade.ct()
    data = handmade.part10(ds.encode(), sop, transfer_syntax="Planted^Name.2")
    out, read_back = _run(data)
    assert b"Planted" not in out
    assert read_back.file_meta.TransferSyntaxUID == handmade.EXPLICIT_LE


def test_method_codes_appended_to_a_sequence_sent_as_un_keep_its_items() -> None:
    from tests.ctp_support import element as script_element
    from tests.ctp_support import engine as ctp_engine
    from tests.ctp_support import xml

    ds, sop = handmade.ct()
    old_code = item(implicit(0x00080100, b"113101") + implicit(0x00080102, b"DCM ")
                    + implicit(0x00080104, b"Old"))
    ds.raw(0x00120064, un_sequence(0x00120064, [old_code]))
    engine = ctp_engine(xml(script_element("00120064", "113100")))
    result = engine.deidentify(engine.read(handmade.part10(ds.encode(), sop)), PSEUDONYMS)
    out = pydicom.dcmread(io.BytesIO(result.data))
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113101", "113100"]


def test_kept_dates_times_and_numbers_that_are_not_are_removed_under_full_dates() -> None:
    ds, sop = handmade.ct()
    ds.add(0x00080021, "DA", "Planted")  # Series Date: kept as is with Full Dates
    ds.add(0x00080031, "TM", "20190412083000")  # Series Time holding a date-time
    ds.add(0x00181020, "LO", "v1")  # Software Versions: free text, kept
    ds.add(0x00280030, "DS", "0.5\\0.5")  # Pixel Spacing: a number, kept
    data, out = _run(handmade.part10(ds.encode(), sop),
                     ProfileOptions(retain_longitudinal_full_dates=True,
                                    retain_device_identity=True))
    assert b"Planted" not in data and ACQUISITION_DATE not in data
    assert "SeriesDate" not in out and "SeriesTime" not in out
    assert out.PixelSpacing == [0.5, 0.5] and out.SoftwareVersions == "v1"


def test_a_script_appending_to_a_value_that_swallowed_elements_carries_nothing_on() -> None:
    from tests.ctp_support import element as script_element
    from tests.ctp_support import engine as ctp_engine
    from tests.ctp_support import xml

    ds, sop = handmade.ct()
    ds.raw(0x00120063, explicit(0x00120063, "LO", b"OLD\x00\x10\x10\x00PN\x0e\x00Planted^Name"))
    engine = ctp_engine(xml(script_element("00120063", "@append(){CTP: DicomAnonymizer}")))
    result = engine.deidentify(engine.read(handmade.part10(ds.encode(), sop)), PSEUDONYMS)
    assert b"Planted^Name" not in result.data


def test_a_patient_id_holding_a_nul_byte_is_refused_with_a_reason() -> None:
    from shared.dicom.errors import Malformed

    ds, sop = handmade.ct()
    ds.raw(0x00100020, explicit(0x00100020, "LO", b"PLANTED\x00ID"))
    with pytest.raises(Malformed, match="PatientID holds a NUL byte"):
        parse(handmade.part10(ds.encode(), sop))


def test_a_value_kept_under_another_vr_is_written_with_its_own() -> None:
    ds, sop = handmade.ct()
    ds.raw(0x00080022, explicit(0x00080022, "UN", b"20190412"))  # Acquisition Date as UN
    ds.raw(0x00200052, explicit(0x00200052, "DA", REFERENCED_UID))  # a UID sent as DA
    _, out = _run(handmade.part10(ds.encode(), sop),
                     ProfileOptions(retain_uids=True, retain_longitudinal_full_dates=True))
    assert out["AcquisitionDate"].VR == "DA" and out.AcquisitionDate == "20190412"
    assert out["FrameOfReferenceUID"].VR == "UI"
    assert out.FrameOfReferenceUID == REFERENCED_UID.decode()


def test_items_under_a_tag_whose_rule_is_for_text_are_removed() -> None:
    ds, sop = handmade.ct()
    inner = item(explicit(0x00081155, "UI", REFERENCED_UID))
    ds.raw(0x00081030, explicit(0x00081030, "SQ", inner))  # Study Description sent as SQ
    data, out = _run(handmade.part10(ds.encode(), sop), ProfileOptions(clean_descriptors=True))
    assert REFERENCED_UID not in data
    assert "StudyDescription" not in out


def test_a_required_uid_with_two_values_is_refused() -> None:
    from shared.dicom.errors import Malformed

    ds, sop = handmade.ct()
    ds.add(0x0020000E, "UI", "1.2.3\\1.2.4")
    with pytest.raises(Malformed, match="SeriesInstanceUID has more than one value"):
        parse(handmade.part10(ds.encode(), sop))


def test_pydicom_warnings_that_quote_values_are_silenced(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import warnings

    from shared.deid.elements import encodings
    from shared.observability.logging import quiet_pydicom

    ds, sop = handmade.ct()
    ds.add(0x00080005, "CS", "ISO IR 100")  # pydicom warns, quoting the value
    ds.add(0x00081030, "LO", "Planted")
    obj = parse(handmade.part10(ds.encode(), sop))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_pydicom()
        encodings(obj)
    assert not [w for w in caught if "ISO IR 100" in str(w.message)]
    assert "ISO IR 100" not in capsys.readouterr().err
