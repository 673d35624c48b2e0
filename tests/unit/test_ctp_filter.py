"""CTP DicomFilter scripts and the SR / Secondary Capture switches, on objects built in memory."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from shared.deid.ctp_filter import (
    STRUCTURED_REPORT_SOP_CLASSES,
    FilterScript,
    FilterSyntaxError,
    ObjectFilter,
)
from shared.dicom.errors import FilteredOut
from shared.dicom.parse import DicomObject, parse
from tests import synth

SR_SAMPLE = (
    Path(__file__).parents[1] / "data" / "samples" / "pydicom" / "test_files" / "test-SR.dcm"
)
KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def _ct(**values: object) -> Dataset:
    ds = synth.make_ct_series(1)[0]
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _obj(ds: Dataset, transfer_syntax: str | None = None) -> DicomObject:
    buffer = io.BytesIO()
    synth.write(ds, buffer, transfer_syntax)
    return parse(buffer.getvalue())


def _accepts(script: str, ds: Dataset | DicomObject) -> bool:
    obj = ds if isinstance(ds, DicomObject) else _obj(ds)
    return FilterScript.parse(script).matches(obj)


def _syntax_error(script: str) -> FilterSyntaxError:
    with pytest.raises(FilterSyntaxError) as caught:
        FilterScript.parse(script)
    return caught.value


# --------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ('SeriesDescription.equals("Chest CT Lung")', True),
        ('SeriesDescription.equals("Chest CT")', False),
        ('SeriesDescription.equals("chest ct lung")', False),
        ('SeriesDescription.equalsIgnoreCase("chest ct LUNG")', True),
        ('SeriesDescription.equalsIgnoreCase("chest ct")', False),
        ('SeriesDescription.contains("CT")', True),
        ('SeriesDescription.contains("ct")', False),
        ('SeriesDescription.containsIgnoreCase("ct lu")', True),
        ('SeriesDescription.containsIgnoreCase("MR")', False),
        ('SeriesDescription.startsWith("Chest")', True),
        ('SeriesDescription.startsWith("chest")', False),
        ('SeriesDescription.startsWith("Lung")', False),
        ('SeriesDescription.startsWithIgnoreCase("CHEST")', True),
        ('SeriesDescription.startsWithIgnoreCase("LUNG")', False),
        ('SeriesDescription.endsWith("Lung")', True),
        ('SeriesDescription.endsWith("lung")', False),
        ('SeriesDescription.endsWith("Chest")', False),
        ('SeriesDescription.endsWithIgnoreCase("LUNG")', True),
        ('SeriesDescription.endsWithIgnoreCase("CHEST")', False),
    ],
)
def test_string_methods_and_their_ignore_case_forms(script: str, expected: bool) -> None:
    assert _accepts(script, _ct(SeriesDescription="Chest CT Lung")) is expected


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ('SeriesDescription.matches("Lung")', False),  # a search would find it
        ('SeriesDescription.matches("Chest")', False),
        ('SeriesDescription.matches(".*Lung")', True),
        ('SeriesDescription.matches("Chest.*")', True),
        ('SeriesDescription.matches("chest.*")', False),
        ('SeriesDescription.matches("(?i)chest.*")', True),
        ('SeriesDescription.matches("\\w+ CT \\w+")', True),
        ('SeriesNumber.matches("\\d+")', True),
        ('SeriesNumber.matches("\\d")', False),  # "12": the whole value must match
    ],
)
def test_matches_needs_the_whole_value_to_match(script: str, expected: bool) -> None:
    assert _accepts(script, _ct(SeriesDescription="Chest CT Lung", SeriesNumber=12)) is expected


def test_one_regular_expression_serves_every_object() -> None:
    script = FilterScript.parse('SeriesDescription.matches("[A-Z]+ [0-9]+")')
    assert script.matches(_obj(_ct(SeriesDescription="AXIAL 5")))
    assert not script.matches(_obj(_ct(SeriesDescription="axial 5")))


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ('SliceThickness.isLessThan("3")', True),
        ('SliceThickness.isLessThan("2.5")', False),
        ('SliceThickness.isLessThan("2")', False),
        ('SliceThickness.isGreaterThan("2")', True),
        ('SliceThickness.isGreaterThan("2.5")', False),
        ('SliceThickness.isGreaterThan("10")', False),  # numbers, not text: "2.5" > "10"
        ('SliceThickness.isLessThan("10")', True),
        ('SliceThickness.isLessThan("3 mm")', True),  # the argument loses its unit too
        ('Rows.isGreaterThan("63")', True),  # US value, read in decimal
        ('Rows.isLessThan("64")', False),
    ],
)
def test_numeric_comparisons(script: str, expected: bool) -> None:
    assert _accepts(script, _ct(SliceThickness="2.5", Rows=64)) is expected


def test_numeric_comparisons_read_digits_out_of_text_as_ctp_does() -> None:
    ds = _ct(SeriesDescription="slab 12mm", SliceLocation="-20.5")
    assert _accepts('SeriesDescription.isGreaterThan("10")', ds)
    assert not _accepts('SeriesDescription.isLessThan("10")', ds)
    # CTP keeps only digits and dots: the sign goes, -20.5 compares as 20.5.
    assert _accepts('SliceLocation.isGreaterThan("20")', ds)
    assert not _accepts('SliceLocation.isLessThan("0")', ds)


@pytest.mark.parametrize(
    "keyword_and_value",
    [("Modality", "CT"), ("PixelSpacing", ["0.5", "0.5"]), ("SeriesDescription", "")],
    ids=["text", "two-values", "empty"],
)
def test_numeric_comparisons_are_false_when_the_value_is_not_a_number(
    keyword_and_value: tuple[str, object],
) -> None:
    keyword, value = keyword_and_value
    ds = _ct(**{keyword: value})
    assert not _accepts(f'{keyword}.isLessThan("1000")', ds)
    assert not _accepts(f'{keyword}.isGreaterThan("0")', ds)
    assert _accepts(f'!{keyword}.isLessThan("1000") * !{keyword}.isGreaterThan("0")', ds)


def test_numeric_comparisons_are_false_for_a_missing_element() -> None:
    ds = _ct()
    assert "ContrastBolusAgent" not in ds
    assert not _accepts('ContrastBolusAgent.isLessThan("1000")', ds)
    assert not _accepts('ContrastBolusAgent.isGreaterThan("0")', ds)


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------


def test_missing_element_reads_as_empty_text() -> None:
    ds = _ct()
    assert "ContrastBolusAgent" not in ds
    assert _accepts('ContrastBolusAgent.equals("")', ds)
    assert _accepts('ContrastBolusAgent.contains("")', ds)
    assert not _accepts('ContrastBolusAgent.equals("0")', ds)
    assert not _accepts('ContrastBolusAgent.startsWith("7")', ds)
    assert _accepts('!ContrastBolusAgent.startsWith("7")', ds)
    assert not _accepts('ContrastBolusAgent.matches(".+")', ds)


def test_empty_element_reads_like_a_missing_one() -> None:
    ds = _ct(AccessionNumber="")
    assert "AccessionNumber" in ds
    assert _accepts('AccessionNumber.equals("")', ds)
    assert _accepts('AccessionNumber.matches("")', ds)
    assert not _accepts('AccessionNumber.matches(".+")', ds)


def test_multi_valued_element_is_its_values_joined_by_backslash() -> None:
    ds = _ct(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    assert _accepts('ImageType.equals("ORIGINAL\\PRIMARY\\AXIAL")', ds)
    assert not _accepts('ImageType.equals("ORIGINAL")', ds)
    assert _accepts('ImageType.contains("PRIMARY")', ds)
    assert _accepts('ImageType.endsWith("\\AXIAL")', ds)
    assert _accepts('ImageType.matches("ORIGINAL\\\\.*")', ds)


def test_values_are_trimmed_as_dcm4che_trims_them() -> None:
    ds = _ct(SeriesDescription="  Chest", PatientName="DOE^JOHN^^", StudyID="7 ")
    assert _accepts('SeriesDescription.equals("Chest")', ds)  # LO: both ends
    assert _accepts('PatientName.equals("DOE^JOHN")', ds)  # PN: trailing '^' too
    assert _accepts('StudyID.equals("7")', ds)  # SH padding


def test_private_element_is_found_by_its_creator_in_any_block() -> None:
    ds = _ct()
    ds.private_block(0x0019, "FIRST CREATOR", create=True).add_new(0x01, "LO", "one")
    ds.private_block(0x0019, "SECOND CREATOR", create=True).add_new(0x01, "LO", "two")
    assert ds[0x0019, 0x1101].value == "two"  # the second block
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        obj = _obj(ds, syntax)
        assert _accepts('0019[SECOND CREATOR]01.equals("two")', obj), syntax
        assert _accepts('0019[FIRST CREATOR]01.equals("one")', obj), syntax
        assert _accepts('0019[NO SUCH CREATOR]01.equals("")', obj), syntax
    planted = synth.PHI.patient_name
    assert _accepts(f'0009[{synth.PRIVATE_CREATOR}]10.equals("{planted}")', ds)


def test_creator_names_may_hold_dots_and_parentheses() -> None:
    ds = _ct()
    ds.private_block(0x0029, "ACME, Inc. (v1.2)", create=True).add_new(0x05, "LO", "x")
    assert _accepts('0029[ACME, Inc. (v1.2)]05.equals("x")', ds)
    assert _accepts('(0029[ACME, Inc. (v1.2)]05).equals("x")', ds)


def test_sequence_path_reads_the_first_item() -> None:
    first, second = Dataset(), Dataset()
    first.ReferencedSOPInstanceUID = "1.2.3.4"
    second.ReferencedSOPInstanceUID = "9.9.9"
    ds = _ct(ReferencedStudySequence=[first, second])
    assert _accepts('ReferencedStudySequence::ReferencedSOPInstanceUID.equals("1.2.3.4")', ds)
    assert not _accepts('ReferencedStudySequence::ReferencedSOPInstanceUID.equals("9.9.9")', ds)
    assert _accepts('(0008,1110)::(0008,1155).startsWith("1.2.")', ds)
    assert _accepts('ReferencedStudySequence.equals("")', ds)  # a sequence has no text


@pytest.mark.parametrize(
    "name",
    ["Modality", "[0008,0060]", "(0008,0060)", "00080060", "[0008, 0060]", "(0008,0060) "],
)
def test_element_names_in_every_form(name: str) -> None:
    assert _accepts(f'{name}.equals("CT")', _ct())
    assert not _accepts(f'{name}.equals("MR")', _ct())


def test_ctp_element_names_are_understood() -> None:
    ds = _ct(AcquisitionDateTime="20200102030405")
    assert _accepts('AcquisitionDatetime.startsWith("2020")', ds)


def test_file_meta_elements_are_read_from_the_file_meta() -> None:
    ds = _ct()
    assert _accepts(f'TransferSyntaxUID.equals("{ExplicitVRLittleEndian}")', _obj(ds))
    implicit = _obj(ds, ImplicitVRLittleEndian)
    assert _accepts(f'TransferSyntaxUID.equals("{ImplicitVRLittleEndian}")', implicit)


# --------------------------------------------------------------------------------------
# Expressions
# --------------------------------------------------------------------------------------


def test_or_of_two_series_numbers_accepts_either() -> None:
    script = FilterScript.parse('SeriesNumber.equals("1") + SeriesNumber.equals("2")')
    assert script.matches(_obj(synth.make_ct_series(1, series_number=1)[0]))
    assert script.matches(_obj(synth.make_ct_series(1, series_number=2)[0]))
    assert not script.matches(_obj(synth.make_ct_series(1, series_number=3)[0]))


def test_and_needs_both() -> None:
    ds = _ct(SeriesNumber=1)
    assert _accepts('Modality.equals("CT") * SeriesNumber.equals("1")', ds)
    assert not _accepts('Modality.equals("CT") * SeriesNumber.equals("2")', ds)
    assert not _accepts('Modality.equals("MR") * SeriesNumber.equals("1")', ds)


def test_and_binds_tighter_than_or() -> None:
    ds = _ct()
    # a + b * c is a + (b * c), not (a + b) * c
    assert _accepts('Modality.equals("CT") + Modality.equals("CT") * Modality.equals("MR")', ds)
    assert FilterScript.parse("true. + false. * false.").matches(_obj(ds))
    assert not FilterScript.parse("false. * true. + false.").matches(_obj(ds))


def test_not_binds_tighter_than_and() -> None:
    obj = _obj(_ct())
    # !a * b is (!a) * b, not !(a * b)
    assert not FilterScript.parse("!false. * false.").matches(obj)
    assert FilterScript.parse("!true. + true.").matches(obj)
    assert not _accepts('!Modality.equals("MR") * Modality.equals("MR")', obj)
    assert _accepts('Modality.equals("CT") * !Modality.equals("MR")', obj)


def test_parentheses_group() -> None:
    obj = _obj(_ct())
    assert not FilterScript.parse("(true. + false.) * false.").matches(obj)
    assert FilterScript.parse("true. + (false. * false.)").matches(obj)
    assert not FilterScript.parse("!(true. + false.)").matches(obj)
    assert FilterScript.parse("!(!(true.))").matches(obj)
    assert _accepts('(Modality.equals("MR") + Modality.equals("CT")) * true.', obj)


def test_constants_need_their_dot() -> None:
    obj = _obj(_ct())
    assert FilterScript.parse("true.").matches(obj)
    assert not FilterScript.parse("false.").matches(obj)
    assert FilterScript.parse("  true .  ").matches(obj)
    assert _syntax_error("true").reason == "unknown element name 'true'"


def test_unquoted_word_or_number_argument_as_in_the_anonymizer_manual() -> None:
    script = FilterScript.parse("SeriesNumber.equals(2) + SeriesNumber.equals(3)")
    assert script.matches(_obj(_ct(SeriesNumber=3)))
    assert not script.matches(_obj(_ct(SeriesNumber=4)))


def test_comments_and_line_breaks_are_ignored() -> None:
    script = FilterScript.parse(
        "// accept CT series 1 or 2\n"
        "Modality.equals(\"CT\")   // the modality\n"
        "  *\n"
        "  ( SeriesNumber . equals ( \"1\" )\n"
        "\t+ SeriesNumber.equals(\"2\") )  // trailing comment"
    )
    assert script.matches(_obj(_ct(SeriesNumber=2)))
    assert not script.matches(_obj(_ct(SeriesNumber=3)))


def test_double_slash_inside_an_argument_is_not_a_comment() -> None:
    ds = _ct(SeriesDescription="see http://example")
    assert _accepts('SeriesDescription.equals("see http://example") * true.', ds)
    assert not _accepts('SeriesDescription.equals("see http://example") * false.', ds)


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t", "// nothing here\n  // nor here"])
def test_blank_script_accepts_everything(text: str) -> None:
    script = FilterScript.parse(text)
    assert script.matches(_obj(_ct()))
    assert script.matches(parse(SR_SAMPLE.read_bytes()))
    assert script.describe() == "true."
    assert script.text == text


def test_describe_is_normalised_and_parses_back() -> None:
    text = (
        "// which objects\n"
        '( Modality.equals("CT")+[0008,0060].equals("MR") )*!(SeriesNumber.isLessThan("2")\n'
        '* true.) + !(!false.)'
    )
    script = FilterScript.parse(text)
    described = script.describe()
    assert described == (
        '(Modality.equals("CT") + [0008,0060].equals("MR"))'
        ' * !(SeriesNumber.isLessThan("2") * true.) + !(!false.)'
    )
    assert FilterScript.parse(described).describe() == described
    assert script.text == text


def test_describe_shows_the_script_and_nothing_of_the_objects_it_saw() -> None:
    script = FilterScript.parse('PatientName.startsWith("A") + PatientID.contains("9")')
    before = script.describe()
    ds = synth.make_ct_series(1)[0]
    script.matches(_obj(ds))
    after = script.describe()
    assert after == before
    for planted in (synth.PHI.patient_name, synth.PHI.patient_id):
        assert planted not in after


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "line", "column", "reason"),
    [
        ('(Modality.equals("CT")\n + true.', 2, 9,
         "expected ')' to close the '(' at line 1, column 1"),
        ('Modality.equals("CT"))', 1, 22, "')' without a matching '('"),
        ('true. *\n  Modality.equal("CT")', 2, 12, "unknown method 'equal'"),
        ('Modality.Equals("CT")', 1, 10, "method names are case-sensitive: equals"),
        ('true. +\n Modalty.equals("CT")', 2, 2, "unknown element name 'Modalty'"),
        ('Modality.equals("CT) + true.', 1, 17, "no closing '\"'"),
        ('Modality.equals("CT") +', 1, 24, "after the '+' at line 1, column 23"),
        ('Modality.equals("CT") *\n\n', 1, 24, "found the end of the script"),
        ('Modality.equals("CT") $', 1, 23, "expected '+', '*' or the end of the script, found '$'"),
        ('Modality.equals("CT") Modality', 1, 23, "found 'Modality'"),
        ("#", 1, 1, "found '#'"),
        ("()", 1, 2, "found ')'"),
        ('Modality.equals(C T)', 1, 17, "expected a quoted argument"),
        ('Modality equals("CT")', 1, 10, "expected '.' and a method after 'Modality'"),
        ('Modality.equals "CT"', 1, 17, "expected '(' after equals"),
        ('Modality.equals("CT" + true.', 1, 22, "expected ')' after the argument of equals"),
        ('!!Modality.equals("CT")', 1, 2, "CTP evaluates '!!x' as '!x'"),
        ('Modality.matches("(CT")', 1, 18, "invalid regular expression"),
        ('SliceThickness.isLessThan("thin")', 1, 27, "isLessThan needs a number"),
        ('SliceThickness.isGreaterThan("-5")', 1, 30, "negative number"),
        ('[0008,0060.equals("CT")', 1, 1, "'[' without a matching close"),
    ],
)
def test_syntax_errors_give_line_column_and_reason(
    script: str, line: int, column: int, reason: str
) -> None:
    error = _syntax_error(script)
    assert (error.line, error.column) == (line, column), error
    assert reason in error.reason
    assert str(error) == f"filter script line {line}, column {column}: {error.reason}"
    assert isinstance(error, ValueError)


# --------------------------------------------------------------------------------------
# ObjectFilter
# --------------------------------------------------------------------------------------


def _reason(object_filter: ObjectFilter, obj: DicomObject) -> str | None:
    try:
        object_filter.check(obj)
    except FilteredOut as refused:
        assert refused.code == "filtered"
        return refused.reason
    return None


def test_default_filter_accepts_a_ct_image() -> None:
    assert _reason(ObjectFilter(), _obj(_ct())) is None


def test_structured_report_is_rejected_by_default_and_accepted_with_the_switch_off() -> None:
    sr = _obj(synth.make_sr())
    reason = _reason(ObjectFilter(), sr)
    assert reason == (
        "Structured Report (SOP class 1.2.840.10008.5.1.4.1.1.88.33) rejected by the SR switch"
    )
    assert all(planted.decode("latin-1") not in reason for planted in synth.PHI_STRINGS)
    assert _reason(ObjectFilter(reject_structured_reports=False), sr) is None


def test_real_sr_sample_is_rejected_by_the_sr_switch() -> None:
    obj = parse(SR_SAMPLE.read_bytes())
    reason = _reason(ObjectFilter(), obj)
    assert reason is not None and "rejected by the SR switch" in reason
    assert _reason(ObjectFilter(reject_structured_reports=False), obj) is None


def test_sr_classes_follow_ctp_without_key_objects() -> None:
    assert {
        "1.2.840.10008.5.1.4.1.1.88.11",
        "1.2.840.10008.5.1.4.1.1.88.22",
        "1.2.840.10008.5.1.4.1.1.88.33",
        "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
        "1.2.840.10008.5.1.4.1.1.88.1",  # retired trial class
    } <= STRUCTURED_REPORT_SOP_CLASSES
    assert KEY_OBJECT_SELECTION not in STRUCTURED_REPORT_SOP_CLASSES
    assert "1.2.840.10008.5.1.4.1.1.88.40" not in STRUCTURED_REPORT_SOP_CLASSES
    kos = _obj(_ct(SOPClassUID=KEY_OBJECT_SELECTION))
    assert _reason(ObjectFilter(), kos) is None


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
@pytest.mark.parametrize(
    "image_type",
    [["DERIVED", "SECONDARY"], ["ORIGINAL", "SECONDARY", "OTHER"], ["DERIVED", "Secondary"]],
)
def test_secondary_capture_is_rejected_by_default(image_type: list[str]) -> None:
    obj = _obj(_ct(ImageType=image_type))
    assert _reason(ObjectFilter(), obj) == (
        "Secondary Capture (ImageType contains SECONDARY) rejected by the "
        "secondary-capture switch"
    )
    assert _reason(ObjectFilter(reject_secondary_captures=False), obj) is None


def test_secondary_capture_test_looks_at_image_type_not_the_sop_class() -> None:
    sc_class = _obj(_ct(SOPClassUID=SECONDARY_CAPTURE_STORAGE, ImageType=["ORIGINAL", "PRIMARY"]))
    assert _reason(ObjectFilter(), sc_class) is None
    no_image_type = _ct()
    del no_image_type.ImageType
    assert _reason(ObjectFilter(), _obj(no_image_type)) is None


def test_reformatted_secondary_images_pass_unless_that_switch_is_off() -> None:
    reformat = _obj(_ct(ImageType=["DERIVED", "SECONDARY", "REFORMATTED", "AVERAGE"]))
    assert _reason(ObjectFilter(), reformat) is None
    reason = _reason(ObjectFilter(accept_reformatted=False), reformat)
    assert reason is not None and "secondary-capture switch" in reason


def test_script_rejection_names_the_script() -> None:
    only_mr = ObjectFilter(script=FilterScript.parse('Modality.equals("MR")'))
    assert _reason(only_mr, _obj(_ct())) == "not accepted by the filter script"
    only_ct = ObjectFilter(script=FilterScript.parse('Modality.equals("CT")'))
    assert _reason(only_ct, _obj(_ct())) is None


def test_switches_apply_before_the_script() -> None:
    accept_all = ObjectFilter(script=FilterScript.parse("true."))
    reason = _reason(accept_all, _obj(synth.make_sr()))
    assert reason is not None and "SR switch" in reason
    reason = _reason(accept_all, _obj(_ct(ImageType=["DERIVED", "SECONDARY"])))
    assert reason is not None and "secondary-capture switch" in reason
