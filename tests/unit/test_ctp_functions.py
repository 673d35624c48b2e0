"""CTP DicomAnonymizer script functions: each one on a small object, compared with the
value CTP itself produces for the same input (MD5 decimal hashes, calendar arithmetic,
lookup and counter tables), and the places where this implementation refuses an object
instead of writing what CTP would write."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from shared.deid.ctp_functions import ScriptFailure, ScriptQuarantine
from shared.dicom.errors import FilteredOut
from tests.ctp_support import (
    SOP_INSTANCE_UID,
    Counters,
    dataset,
    deidentify,
    element,
    engine,
    only,
    param,
    remove,
    run,
    xml,
)

PATIENT_ID = "00100020"
PATIENT_NAME = "00100010"
STUDY_DATE = "00080020"
STUDY_ID = "00200010"
STUDY_DESCRIPTION = "00081030"
SOP_INSTANCE = "00080018"
PATIENT_AGE = "00101010"
PATIENT_COMMENTS = "00104000"
ACCESSION_NUMBER = "00080050"
MODALITY = "00080060"

MD5_OF_12345 = "173447602773428053556316684567667297915"
MD5_OF_NOTHING = "281949768489412648962353822266799178366"


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


# ---- @hash, @hashname, @hashptid, @hashuid ----------------------------------------------


def test_hash_is_the_unsigned_decimal_md5_of_the_value() -> None:
    out = only(dataset(), PATIENT_ID, "@hash(PatientID)")
    assert out.PatientID == MD5_OF_12345


def test_hash_keeps_the_first_digits_and_concatenates_with_literal_text() -> None:
    out = run(dataset(StudyID="S"), xml(
        element(PATIENT_ID, "@hash(PatientID,8)"),
        element(STUDY_ID, "ANON-@hash(PatientID,6)"),
    ))
    assert out.PatientID == "17344760"
    assert out.StudyID == "ANON-173447"


def test_hash_length_can_come_from_a_parameter() -> None:
    out = run(dataset(), xml(param("LEN", "8"), element(PATIENT_ID, "@hash(this,@LEN)")))
    assert out.PatientID == "17344760"


@pytest.mark.parametrize("length", ["0", "-3", "", "many"])
def test_hash_length_that_is_not_positive_means_the_whole_hash(length: str) -> None:
    out = only(dataset(), PATIENT_ID, f"@hash(PatientID,{length})")
    assert out.PatientID == MD5_OF_12345


def test_hash_of_a_missing_element_removes_the_scripted_element() -> None:
    out = only(dataset(), PATIENT_ID, "@hash(AccessionNumber)")
    assert "PatientID" not in out


def test_hash_of_an_empty_element_is_the_md5_of_nothing() -> None:
    out = only(dataset(AccessionNumber=""), ACCESSION_NUMBER, "@hash(this)")
    assert out.AccessionNumber == MD5_OF_NOTHING


def test_hash_of_a_binary_number_hashes_its_decimal_text() -> None:
    out = only(dataset(Rows=512, StudyID="S1"), STUDY_ID, "@hash(Rows,10)")
    assert out.StudyID == "2213893662"  # usmd5("512")


def test_hashname_hashes_the_first_words_of_the_name_without_separators() -> None:
    assert only(dataset(), PATIENT_NAME, "@hashname(this,6,2)").PatientName == "148835"
    assert only(dataset(), PATIENT_NAME, "@hashname(this,4)").PatientName == "1113"


def test_hashname_drops_apostrophes_and_spaces_before_hashing() -> None:
    out = only(dataset(PatientName="O'Brien^Mary Ann"), PATIENT_NAME, "@hashname(this,4)")
    assert out.PatientName == "1864"  # hash of OBRIENMARYANN


def test_hashname_length_that_is_not_a_number_means_four_digits() -> None:
    out = only(dataset(), PATIENT_NAME, "@hashname(this,x)")
    assert out.PatientName == "1113"


def test_hashptid_hashes_the_site_id_in_brackets_followed_by_the_patient_id() -> None:
    out = run(dataset(StudyID="S"), xml(
        element(PATIENT_ID, "@hashptid(@SITEID,PatientID,8)"),
        element(STUDY_ID, "@hashptid(@SITEID,PatientID)"),
    ))
    assert out.PatientID == "49797362"
    assert out.StudyID == "49797362624546327820105586704007196461"


def test_hashptid_accepts_a_literal_site_and_a_missing_patient_id() -> None:
    out = only(dataset(PatientID=None, StudyID="S"), STUDY_ID, "@hashptid(SITE01,PatientID,8)")
    assert out.StudyID == "21420554"  # usmd5("[SITE01]")[:8]


def test_hashuid_appends_the_md5_decimal_of_the_uid_to_the_root() -> None:
    out = run(dataset(), xml(param("UIDROOT", "1.2.3.4"),
                             element(SOP_INSTANCE, "@hashuid(@UIDROOT,this)")))
    assert out.SOPInstanceUID == "1.2.3.4.62879281199229260709331501011823979299"
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_hashuid_cuts_the_new_uid_at_64_characters() -> None:
    out = run(dataset(), xml(param("UIDROOT", "1.2.826.0.1.3680043.10.474.2.12345"),
                             element(SOP_INSTANCE, "@hashuid(@UIDROOT,this)")))
    assert out.SOPInstanceUID == "1.2.826.0.1.3680043.10.474.2.12345.62879281199229260709331501011"


def test_hashuid_appends_the_result_of_another_elements_script_before_hashing() -> None:
    out = run(dataset(StudyID="1"), xml(
        param("UIDROOT", "1.2.3.4."),
        element(SOP_INSTANCE, "@hashuid(@UIDROOT,this,StudyID)"),
        element(STUDY_ID, "X"),
    ))
    assert out.SOPInstanceUID == "1.2.3.4.94870461246810404396570156617189938203"


def test_hashuid_uses_the_other_script_even_when_its_element_is_absent() -> None:
    out = run(dataset(), xml(
        param("UIDROOT", "1.2.3.4"),
        element(SOP_INSTANCE, "@hashuid(@UIDROOT,this,StudyID)"),
        element(STUDY_ID, "X"),
    ))
    assert "StudyID" not in out
    assert out.SOPInstanceUID == "1.2.3.4.94870461246810404396570156617189938203"


def test_hashuid_of_a_missing_uid_removes_the_scripted_element() -> None:
    out = run(dataset(FrameOfReferenceUID="1.2.3.9"), xml(
        param("UIDROOT", "1.2.3.4"),
        element("00200052", "@hashuid(@UIDROOT,IrradiationEventUID)"),
    ))
    assert "FrameOfReferenceUID" not in out


# ---- dates -------------------------------------------------------------------------------


def test_hashdate_moves_study_date_back_by_the_md5_offset_of_patient_id() -> None:
    out = only(dataset(), STUDY_DATE, "@hashdate(this,PatientID)")
    assert out.StudyDate == "20180709"  # 7915 mod 3650 = 615 days earlier


def test_hashdate_reads_the_original_patient_id_even_when_it_is_replaced() -> None:
    out = run(dataset(), xml(
        element(PATIENT_ID, "@hash(this,8)"),
        element(STUDY_DATE, "@hashdate(this,PatientID)"),
    ))
    assert (out.PatientID, out.StudyDate) == ("17344760", "20180709")


def test_hashdate_offset_depends_on_the_patient() -> None:
    out = only(dataset(PatientID="PAT-001"), STUDY_DATE, "@hashdate(this,PatientID)")
    assert out.StudyDate == "20181013"  # 4169 mod 3650 = 519 days earlier


def test_hashdate_shifts_every_value_of_a_multi_valued_date() -> None:
    out = only(dataset(DateOfLastCalibration=["20200315", "20200401"]), "00181200",
               "@hashdate(this,PatientID)")
    assert list(out.DateOfLastCalibration) == ["20180709", "20180726"]


def test_hashdate_of_a_missing_date_or_hash_element_removes_the_element() -> None:
    assert "StudyDate" not in only(dataset(), STUDY_DATE, "@hashdate(SeriesDate,PatientID)")
    assert "StudyDate" not in only(dataset(PatientID=None), STUDY_DATE,
                                   "@hashdate(this,PatientID)")


def test_hashdate_of_a_value_shorter_than_a_date_empties_the_element() -> None:
    out = only(dataset(StudyDate=""), STUDY_DATE, "@hashdate(this,PatientID)")
    assert "StudyDate" in out and out.StudyDate == ""


def test_incrementdate_adds_days_with_calendar_arithmetic() -> None:
    assert only(dataset(), STUDY_DATE, "@incrementdate(this,-30)").StudyDate == "20200214"
    out = only(dataset(StudyDate="20200301"), STUDY_DATE, "@incrementdate(this,-1)")
    assert out.StudyDate == "20200229"


def test_incrementdate_keeps_the_time_of_a_datetime() -> None:
    out = only(dataset(AcquisitionDateTime="20200315123000.000"), "0008002A",
               "@incrementdate(this,-30)")
    assert out.AcquisitionDateTime == "20200214123000.000"


def test_incrementdate_days_can_come_from_a_parameter() -> None:
    out = run(dataset(), xml(param("DATEINC", "-30"),
                             element(STUDY_DATE, "@incrementdate(this,@DATEINC)")))
    assert out.StudyDate == "20200214"


def test_incrementdate_with_three_arguments_reads_the_days_from_the_lookup_table() -> None:
    table = {"dateoffset/12345": "-30"}
    out = only(dataset(), STUDY_DATE, "@incrementdate(this,PatientID,dateoffset)", lookup=table)
    assert out.StudyDate == "20200214"


def test_incrementdate_lookup_miss_empties_the_date_instead_of_quarantining() -> None:
    table = {"dateoffset/99999": "-30"}
    out = only(dataset(), STUDY_DATE, "@incrementdate(this,PatientID,dateoffset)", lookup=table)
    assert "StudyDate" in out and out.StudyDate == ""


def test_incrementdate_of_a_missing_date_removes_the_element() -> None:
    out = only(dataset(), STUDY_DATE, "@incrementdate(SeriesDate,-30)")
    assert "StudyDate" not in out


def test_modifydate_sets_fields_and_star_keeps_one() -> None:
    assert only(dataset(), STUDY_DATE, "@modifydate(this,*,1,1)").StudyDate == "20200101"


def test_modifydate_is_lenient_like_a_java_calendar() -> None:
    out = only(dataset(), STUDY_DATE, "@modifydate(this,2019,2,31)")
    assert out.StudyDate == "20190303"


def test_modifydate_writes_a_four_digit_year() -> None:
    out = only(dataset(), STUDY_DATE, "@modifydate(this,900,*,*)")
    assert out.StudyDate == "09000315"


def test_modifydate_treats_a_negative_field_as_keep_and_a_signed_one_as_a_number() -> None:
    out = only(dataset(), STUDY_DATE, "@modifydate(this,-1,+2,*)")
    assert out.StudyDate == "20200215"


def test_dateinterval_counts_days_from_the_patients_base_date() -> None:
    table = {"basedate/12345": "1/1/2020"}
    out = only(dataset(StudyID="S"), STUDY_ID, "@dateinterval(StudyDate,basedate,PatientID)",
               lookup=table)
    assert out.StudyID == "74"


def test_dateinterval_with_an_origin_moves_the_date_to_the_same_interval_after_it() -> None:
    out = run(dataset(), xml(
        param("ORIGIN", "19600101"),
        element(STUDY_DATE, "@dateinterval(this,basedate,PatientID,@ORIGIN)"),
    ), lookup={"basedate/12345": "1/1/2020"})
    assert out.StudyDate == "19600315"


def test_dateinterval_without_a_base_date_quarantines() -> None:
    with pytest.raises(ScriptQuarantine):
        only(dataset(), STUDY_DATE, "@dateinterval(this,basedate,PatientID)",
             lookup={"basedate/99999": "1/1/2020"})


def test_dateinterval_with_an_origin_that_is_not_a_date_quarantines() -> None:
    with pytest.raises(ScriptQuarantine):
        run(dataset(), xml(
            param("ORIGIN", "someday"),
            element(STUDY_DATE, "@dateinterval(this,basedate,PatientID,@ORIGIN)"),
        ), lookup={"basedate/12345": "1/1/2020"})


def test_dateinterval_in_a_sequence_item_takes_its_key_from_the_root() -> None:
    ds = dataset(RequestAttributesSequence=Sequence([
        _item(StudyDate="20200315", PatientID="99999")]))
    out = run(ds, xml(
        param("ORIGIN", "19600101"),
        element("00400275", "@process()"),
        element(STUDY_DATE, "@dateinterval(this,basedate,PatientID,@ORIGIN)"),
    ), lookup={"basedate/12345": "1/1/2020", "basedate/99999": "1/1/1990"})
    assert out.StudyDate == "19600315"
    assert out.RequestAttributesSequence[0].StudyDate == "19600315"


def test_a_result_that_is_not_a_date_quarantines_instead_of_keeping_the_original() -> None:
    with pytest.raises(ScriptFailure):
        only(dataset(), STUDY_DATE, "REMOVED")


# ---- @round, @initials -------------------------------------------------------------------


@pytest.mark.parametrize(("age", "width", "expected"), [
    ("057Y", "5", "055Y"),
    ("025Y", "10", "030Y"),  # half up, not to even
    ("045Y", "10", "050Y"),
    ("012Y", "5", "010Y"),
    ("003M", "5", "5M"),  # even length: no leading zero
])
def test_round_puts_an_age_in_bins_rounding_half_up(age: str, width: str, expected: str) -> None:
    out = only(dataset(PatientAge=age), PATIENT_AGE, f"@round(this,{width})")
    assert out.PatientAge == expected


def test_round_width_can_come_from_a_parameter() -> None:
    out = run(dataset(PatientAge="057Y"), xml(param("BIN", "5"),
                                              element(PATIENT_AGE, "@round(this,@BIN)")))
    assert out.PatientAge == "055Y"


def test_round_of_an_age_without_digits_quarantines_instead_of_writing_the_arguments() -> None:
    with pytest.raises(ScriptFailure):
        only(dataset(PatientAge="Y"), PATIENT_AGE, "@round(this,5)")


def test_initials_put_the_family_name_initial_last() -> None:
    assert only(dataset(), PATIENT_NAME, "@initials(this)").PatientName == "JQS"


def test_initials_with_an_offset_shift_each_letter() -> None:
    assert only(dataset(), PATIENT_NAME, "@initials(this,1)").PatientName == "KRT"
    assert only(dataset(), PATIENT_NAME, "@initials(this,-1)").PatientName == "IPR"


def test_initials_of_an_empty_name_are_x() -> None:
    assert only(dataset(PatientName=""), PATIENT_NAME, "@initials(this)").PatientName == "X"


# ---- @lookup -----------------------------------------------------------------------------

LOOKUP = {"ptid/12345": "ANON-0001"}


def test_lookup_replaces_the_value_with_the_table_entry() -> None:
    assert only(dataset(), PATIENT_ID, "@lookup(this,ptid)", lookup=LOOKUP).PatientID == (
        "ANON-0001")


def test_lookup_follows_indirections_to_another_key() -> None:
    table = {"ptid/12345": "@common/x", "common/x": "SHARED"}
    out = only(dataset(), PATIENT_ID, "@lookup(this,ptid)", lookup=table)
    assert out.PatientID == "SHARED"


def test_lookup_key_joins_several_elements_with_a_bar() -> None:
    table = {"pair/12345|Smith^John^Q": "BOTH"}
    out = only(dataset(), PATIENT_ID, "@lookup(PatientID|PatientName,pair)", lookup=table)
    assert out.PatientID == "BOTH"


def test_lookup_key_drops_the_backslashes_of_a_multi_valued_element() -> None:
    table = {"ids/AB": "JOINED"}
    out = only(dataset(OtherPatientIDs=["A", "B"]), "00101000", "@lookup(this,ids)",
               lookup=table)
    assert out.OtherPatientIDs == "JOINED"


def test_lookup_miss_without_an_action_quarantines() -> None:
    with pytest.raises(ScriptQuarantine):
        only(dataset(PatientID="999"), PATIENT_ID, "@lookup(this,ptid)", lookup=LOOKUP)


def test_lookup_without_a_table_quarantines() -> None:
    with pytest.raises(ScriptQuarantine):
        only(dataset(), PATIENT_ID, "@lookup(this,ptid)")


def test_lookup_miss_with_keep_leaves_the_value() -> None:
    out = only(dataset(PatientID="999"), PATIENT_ID, "@lookup(this,ptid,keep)", lookup=LOOKUP)
    assert out.PatientID == "999"


def test_lookup_miss_with_remove_removes_the_element() -> None:
    out = only(dataset(PatientID="999"), PATIENT_ID, "@lookup(this,ptid,remove)", lookup=LOOKUP)
    assert "PatientID" not in out


def test_lookup_miss_with_empty_empties_the_element() -> None:
    out = only(dataset(PatientID="999"), PATIENT_ID, "@lookup(this,ptid,empty)", lookup=LOOKUP)
    assert "PatientID" in out and out.PatientID == ""


def test_lookup_miss_with_default_writes_the_default() -> None:
    out = only(dataset(PatientID="999"), PATIENT_ID, '@lookup(this,ptid,default,"UNKNOWN")',
               lookup=LOOKUP)
    assert out.PatientID == "UNKNOWN"


def test_lookup_miss_with_ignore_keeps_a_key_matching_the_pattern_and_refuses_others() -> None:
    script = r'@lookup(this,ptid,ignore,"ANON-\d+")'
    out = only(dataset(PatientID="ANON-77"), PATIENT_ID, script, lookup=LOOKUP)
    assert out.PatientID == "ANON-77"
    with pytest.raises(ScriptQuarantine):
        only(dataset(PatientID="77"), PATIENT_ID, script, lookup=LOOKUP)


def test_lookup_hit_ignores_the_miss_action() -> None:
    out = only(dataset(), PATIENT_ID, "@lookup(this,ptid,remove)", lookup=LOOKUP)
    assert out.PatientID == "ANON-0001"


# ---- @integer ----------------------------------------------------------------------------


def test_integer_numbers_patients_in_arrival_order_across_objects() -> None:
    runner = engine(xml(element(PATIENT_ID, "@integer(PatientID,ptid,6)")))
    counters: Counters = {}
    numbers = [deidentify(runner, dataset(PatientID=p), counters).PatientID
               for p in ("12345", "67890", "12345")]
    assert numbers == ["000001", "000002", "000001"]


def test_integer_without_a_width_is_not_padded() -> None:
    assert only(dataset(), PATIENT_ID, "@integer(PatientID,ptid)").PatientID == "1"


def test_integer_width_pads_but_never_truncates() -> None:
    counters: Counters = {("ptid", "other"): 123}
    out = only(dataset(), PATIENT_ID, "@integer(PatientID,ptid,2)", counters=counters)
    assert out.PatientID == "124"


def test_integer_key_types_count_independently_and_quotes_do_not_matter() -> None:
    runner = engine(xml(
        element(PATIENT_ID, "@integer(PatientID,ptid,6)"),
        element("00101000", '@integer(PatientID,"ptid",6)'),
        element(ACCESSION_NUMBER, "@integer(AccessionNumber,acc,4)"),
    ))
    counters: Counters = {}
    first = deidentify(runner, dataset(OtherPatientIDs="X", AccessionNumber="A1"), counters)
    second = deidentify(runner, dataset(PatientID="67890", OtherPatientIDs="X",
                                        AccessionNumber="A1"), counters)
    assert (first.PatientID, first.OtherPatientIDs, first.AccessionNumber) == (
        "000001", "000001", "0001")
    assert (second.PatientID, second.AccessionNumber) == ("000002", "0001")
    assert set(counters) == {("ptid", "12345"), ("ptid", "67890"), ("acc", "A1")}


def test_integer_of_a_missing_element_numbers_the_empty_value() -> None:
    counters: Counters = {}
    out = only(dataset(StudyID="S"), STUDY_ID, "@integer(AccessionNumber,acc,4)",
               counters=counters)
    assert out.StudyID == "0001"
    assert counters == {("acc", ""): 1}


# ---- text functions ----------------------------------------------------------------------


def test_contents_copies_another_elements_value() -> None:
    out = only(dataset(StudyID="S"), STUDY_ID, "@contents(PatientID)")
    assert out.StudyID == "12345"


def test_contents_with_a_pattern_removes_every_match() -> None:
    out = only(dataset(PatientID="AB-123-CD"), PATIENT_ID, r'@contents(this,"[0-9]")')
    assert out.PatientID == "AB--CD"


def test_contents_with_a_replacement_can_use_groups() -> None:
    out = only(dataset(StudyDescription="CHEST CT"), STUDY_DESCRIPTION,
               r'@contents(this,"(\w+) (\w+)","$2 of $1")')
    assert out.StudyDescription == "CT of CHEST"


def test_contents_with_four_arguments_is_empty() -> None:
    out = only(dataset(StudyDescription="CHEST CT"), STUDY_DESCRIPTION,
               '@contents(this,"C","D","E")')
    assert out.StudyDescription == ""


def test_contents_of_a_missing_element_is_empty() -> None:
    out = only(dataset(StudyID="S"), STUDY_ID, "[@contents(AccessionNumber)]")
    assert out.StudyID == "[]"


def test_value_uses_the_default_when_the_element_is_missing_or_empty() -> None:
    script = '@value(AccessionNumber,"NONE")'
    assert only(dataset(StudyID="S"), STUDY_ID, script).StudyID == "NONE"
    assert only(dataset(StudyID="S", AccessionNumber=""), STUDY_ID, script).StudyID == "NONE"
    assert only(dataset(StudyID="S", AccessionNumber="A7"), STUDY_ID, script).StudyID == "A7"


def test_truncate_keeps_the_first_characters_of_the_trimmed_value() -> None:
    out = only(dataset(StudyDescription=" CT CHEST"), STUDY_DESCRIPTION, "@truncate(this,5)")
    assert out.StudyDescription == "CT CH"


def test_truncate_with_a_negative_count_keeps_the_last_characters() -> None:
    out = only(dataset(StudyDescription="CT CHEST"), STUDY_DESCRIPTION, "@truncate(this,-4)")
    assert out.StudyDescription == "HEST"


def test_truncate_with_a_negative_count_trims_the_value_first() -> None:
    out = only(dataset(PatientComments="   NOTE"), PATIENT_COMMENTS, "@truncate(this,-6)")
    assert out.PatientComments == "NOTE"


def test_truncate_with_a_count_that_is_not_a_number_keeps_the_value() -> None:
    out = only(dataset(StudyDescription="CT CHEST"), STUDY_DESCRIPTION, "@truncate(this,x)")
    assert out.StudyDescription == "CT CHEST"


def test_lowercase_and_uppercase() -> None:
    out = run(dataset(StudyDescription="Ct Chest", StudyID="s1"), xml(
        element(STUDY_DESCRIPTION, "@lowercase(this)"),
        element(STUDY_ID, "@uppercase(this)"),
    ))
    assert (out.StudyDescription, out.StudyID) == ("ct chest", "S1")


@pytest.mark.parametrize(("index", "expected"), [
    ("1", "home"), ("0", ""), ("-1", "ct"), ("9", "/home/scans/ct/"), ("x", "/home/scans/ct/"),
])
def test_pathelement_picks_one_part_of_a_path(index: str, expected: str) -> None:
    out = only(dataset(StudyDescription="/home/scans/ct/"), STUDY_DESCRIPTION,
               f"@pathelement(this,{index})")
    assert out.StudyDescription == expected


def test_param_writes_a_parameter_and_siteid_is_the_sites() -> None:
    out = run(dataset(StudyID="S"), xml(
        param("PROJECT", "TRIAL7"),
        element(STUDY_ID, "@param(@PROJECT)-@param(@SITEID)-@param(literal)"),
    ))
    assert out.StudyID == "TRIAL7-SITE01-literal"


def test_append_adds_a_value_to_a_multi_valued_element() -> None:
    out = only(dataset(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"]), "00080008",
               "@append(){DERIVED}")
    assert list(out.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL", "DERIVED"]


def test_append_to_an_empty_element_writes_only_the_clause() -> None:
    out = only(dataset(ImageType=""), "00080008", "@append(){DERIVED}")
    assert out.ImageType == "DERIVED"


def test_a_multi_valued_element_is_read_with_backslashes() -> None:
    out = only(dataset(ImageType=["ORIGINAL", "PRIMARY"], StudyID="S"), STUDY_ID,
               r'@contents(ImageType,"\\","+")')
    assert out.StudyID == "ORIGINAL+PRIMARY"


# ---- @if, @select ------------------------------------------------------------------------


@pytest.mark.parametrize(("condition", "expected"), [
    ("OtherPatientIDs,exists", "no"),
    ("PatientID,exists", "yes"),
    ("AccessionNumber,isblank", "yes"),
    ("StudyDescription,isblank", "no"),
    ("Modality,equals,ct", "yes"),
    ('Modality,equals," CT"', "no"),  # not trimmed
    ("StudyDescription,contains,chest", "yes"),
    ("StudyDescription,contains,head", "no"),
    (r'PatientID,matches,"\d+"', "yes"),
    (r'PatientID,matches,"\d"', "no"),  # the whole value must match
    ("PatientAge,greaterthan,89", "yes"),
    ("PatientAge,greaterthan,91", "no"),
    ("PatientAge,greaterthan,09.1", "no"),  # only digits compared: 91 > 91 is false
    ("PatientID,greaterthan,99999999999", "yes"),  # overflowing int counts as 0
    ("PatientID,lessthan,99", "no"),  # no such condition
    ("PatientID,EXISTS", "no"),  # conditions are lowercase
    ("PatientID,equals", "no"),  # missing argument
])
def test_if_condition_chooses_the_clause(condition: str, expected: str) -> None:
    ds = dataset(StudyID="S", AccessionNumber="  ", StudyDescription="CT Chest",
                 PatientAge="091Y")
    out = only(ds, STUDY_ID, f"@if({condition}){{yes}}{{no}}")
    assert out.StudyID == expected


def test_if_argument_can_be_a_parameter() -> None:
    out = run(dataset(StudyID="S"), xml(
        param("MODALITY", "CT"),
        element(STUDY_ID, "@if(Modality,equals,@MODALITY){@keep()}{@remove()}"),
    ))
    assert out.StudyID == "S"


def test_if_clauses_are_scripts_and_can_nest() -> None:
    script = ("@if(this,isblank){@remove()}"
              "{@if(Modality,equals,CT){CT-@hash(PatientID,4)}{@keep()}}")
    assert only(dataset(StudyID="S"), STUDY_ID, script).StudyID == "CT-1734"
    assert only(dataset(StudyID="S", Modality="MR"), STUDY_ID, script).StudyID == "S"
    assert "StudyID" not in only(dataset(StudyID=""), STUDY_ID, script)


def test_if_this_refers_to_the_scripted_element() -> None:
    out = only(dataset(PatientAge="091Y"), PATIENT_AGE,
               "@if(this,greaterthan,89){090Y}{@keep()}")
    assert out.PatientAge == "090Y"


def test_select_chooses_by_whether_a_sequence_item_is_being_processed() -> None:
    ds = dataset(AccessionNumber="A1",
                 RequestAttributesSequence=Sequence([_item(AccessionNumber="A2")]))
    out = run(ds, xml(
        element("00400275", "@process()"),
        element(ACCESSION_NUMBER, "@select(){ROOT}{ITEM}"),
    ))
    assert out.AccessionNumber == "ROOT"
    assert out.RequestAttributesSequence[0].AccessionNumber == "ITEM"


# ---- sequences ---------------------------------------------------------------------------


def _referencing(uid: str) -> Dataset:
    return dataset(
        ReferencedStudySequence=Sequence([_item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
                                                ReferencedSOPInstanceUID=uid)]),
        ReferencedImageSequence=Sequence([_item(ReferencedSOPClassUID="1.2.3",
                                                ReferencedSOPInstanceUID=uid)]),
    )


def test_process_applies_the_scripts_inside_the_items_of_a_sequence() -> None:
    out = run(_referencing(SOP_INSTANCE_UID), xml(
        param("UIDROOT", "1.2.3.4"),
        element("00081110", "@process()"),
        element("00081155", "@hashuid(@UIDROOT,this)"),
    ))
    processed = out.ReferencedStudySequence[0]
    assert processed.ReferencedSOPInstanceUID == (
        "1.2.3.4.62879281199229260709331501011823979299")
    assert processed.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.1"
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == SOP_INSTANCE_UID


def test_removal_of_unspecified_elements_applies_inside_processed_items() -> None:
    out = run(_referencing(SOP_INSTANCE_UID), xml(
        remove("unspecifiedelements"),
        element("00081110", "@process()"),
        element("00081155", "@keep()"),
    ))
    item = out.ReferencedStudySequence[0]
    assert item.ReferencedSOPInstanceUID == SOP_INSTANCE_UID
    assert "ReferencedSOPClassUID" not in item
    assert "ReferencedImageSequence" not in out


def test_root_prefix_inside_an_item_reads_the_top_level() -> None:
    ds = dataset(OtherPatientIDsSequence=Sequence([_item(PatientID="OTHER-1")]))
    out = run(ds, xml(
        element("00101002", "@process()"),
        element(PATIENT_ID, "@hash(root:PatientID,8)"),
    ))
    assert out.PatientID == "17344760"
    assert out.OtherPatientIDsSequence[0].PatientID == "17344760"


def test_this_inside_an_item_is_the_items_element() -> None:
    ds = dataset(OtherPatientIDsSequence=Sequence([_item(PatientID="OTHER-1")]))
    out = run(ds, xml(element("00101002", "@process()"), element(PATIENT_ID, "@hash(this,8)")))
    assert out.OtherPatientIDsSequence[0].PatientID == "12057576"  # usmd5("OTHER-1")


def test_a_sequence_path_reads_the_first_item() -> None:
    ds = dataset(StudyID="S", OtherPatientIDsSequence=Sequence([
        _item(PatientID="OTHER-1"), _item(PatientID="OTHER-2")]))
    out = only(ds, STUDY_ID, "@contents(OtherPatientIDsSequence::PatientID)")
    assert out.StudyID == "OTHER-1"


def test_a_sequence_with_an_empty_script_keeps_its_items_untouched() -> None:
    out = run(_referencing("1.2.3.5"), xml(
        element("00081110", ""),
        element("00081155", "@remove()"),
    ))
    assert out.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.3.5"


def test_a_sequence_can_be_removed_by_its_script() -> None:
    out = only(_referencing("1.2.3.5"), "00081110", "@remove()")
    assert "ReferencedStudySequence" not in out
    assert "ReferencedImageSequence" in out


# ---- result tokens, escapes, creation ----------------------------------------------------


def test_keep_leaves_the_value() -> None:
    assert only(dataset(), PATIENT_ID, "@keep()").PatientID == "12345"


def test_remove_anywhere_in_the_result_removes_the_element() -> None:
    assert "PatientID" not in only(dataset(), PATIENT_ID, "X@remove()Y")


def test_keep_after_text_is_written_as_text() -> None:
    assert only(dataset(), PATIENT_ID, "X@keep()").PatientID == "X@keep()"


def test_empty_writes_a_zero_length_value() -> None:
    out = only(dataset(), PATIENT_ID, "@empty()")
    assert "PatientID" in out and out.PatientID == ""


def test_blank_writes_spaces_capped_at_55() -> None:
    out = run(dataset(PatientComments="x", StudyComments="y"), xml(
        element(PATIENT_COMMENTS, "@blank(5)"),
        element("00324000", "@blank(80)"),
    ))
    five = out.get_item(0x00104000).value
    many = out.get_item(0x00324000).value
    assert five.strip() == b"" and 5 <= len(five) <= 6
    assert many.strip() == b"" and 55 <= len(many) <= 56


def test_an_enabled_empty_script_empties_the_element() -> None:
    out = only(dataset(StudyDescription="CT CHEST"), STUDY_DESCRIPTION, "")
    assert "StudyDescription" in out and out.StudyDescription == ""


def test_backslash_escapes_an_at_sign_and_writes_a_value_separator() -> None:
    out = run(dataset(StudyDescription="x", ImageType="ORIGINAL"), xml(
        element(STUDY_DESCRIPTION, r"user\@host"),
        element("00080008", r"DERIVED\\SECONDARY"),
    ))
    assert out.StudyDescription == "user@host"
    assert list(out.ImageType) == ["DERIVED", "SECONDARY"]


def test_always_creates_a_missing_element() -> None:
    out = run(dataset(), xml(
        element("00120062", "@always()YES", "PatientIdentityRemoved"),
        element("00120063", "@always()CTP @param(@SITEID)", "DeidentificationMethod"),
    ))
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod == "CTP SITE01"


def test_without_always_a_missing_element_is_not_created() -> None:
    out = only(dataset(), "00120062", "YES")
    assert "PatientIdentityRemoved" not in out


def test_always_replaces_an_element_that_is_present() -> None:
    out = only(dataset(PatientIdentityRemoved="NO"), "00120062", "@always()YES")
    assert out.PatientIdentityRemoved == "YES"


def test_always_with_a_keep_or_remove_result_creates_nothing() -> None:
    out = run(dataset(), xml(
        element("00120062", "@always()@keep()"),
        element("00120063", "@always()@remove()"),
        element(STUDY_ID, "@always()@empty()"),
    ))
    assert "PatientIdentityRemoved" not in out and "DeidentificationMethod" not in out
    assert "StudyID" in out and out.StudyID == ""


def test_always_can_create_from_a_sequence_path() -> None:
    ds = dataset(OtherPatientIDsSequence=Sequence([_item(PatientID="OTHER-1")]))
    out = only(ds, PATIENT_COMMENTS, "@always()@contents(OtherPatientIDsSequence::PatientID)")
    assert out.PatientComments == "OTHER-1"


def test_require_creates_from_another_element_or_a_default() -> None:
    out = run(dataset(), xml(
        element(STUDY_ID, "@always()@require(PatientID)"),
        element(ACCESSION_NUMBER, '@always()@require(OtherPatientIDs,"NONE")'),
        element(STUDY_DESCRIPTION, "@always()@require()"),
    ))
    assert out.StudyID == "12345"
    assert out.AccessionNumber == "NONE"
    assert "StudyDescription" in out and out.StudyDescription == ""


def test_require_keeps_an_element_that_is_present() -> None:
    out = only(dataset(StudyID="S1"), STUDY_ID, "@always()@require(PatientID)")
    assert out.StudyID == "S1"


def test_require_without_always_creates_nothing() -> None:
    assert "StudyID" not in only(dataset(), STUDY_ID, "@require(PatientID)")


def test_always_require_creates_an_empty_sequence() -> None:
    out = only(dataset(), "00081110", "@always()@require()")
    assert "ReferencedStudySequence" in out and len(out.ReferencedStudySequence) == 0


def test_quarantine_refuses_the_object() -> None:
    with pytest.raises(ScriptQuarantine):
        only(dataset(), PATIENT_ID, "@if(this,equals,12345){@quarantine()}{@keep()}")
    assert only(dataset(PatientID="1"), PATIENT_ID,
                "@if(this,equals,12345){@quarantine()}{@keep()}").PatientID == "1"


def test_skip_refuses_the_object_instead_of_passing_it_on() -> None:
    with pytest.raises(FilteredOut):
        only(dataset(), MODALITY, "@if(this,equals,SR){@keep()}{@skip()}")


def test_text_for_a_binary_number_must_be_a_number() -> None:
    assert only(dataset(Rows=512), "00280010", "256").Rows == 256
    with pytest.raises(ScriptFailure):
        only(dataset(Rows=512), "00280010", "many")


# ---- private elements --------------------------------------------------------------------


def _with_private(value: str = "secret") -> Dataset:
    ds = dataset(StudyID="S")
    ds.private_block(0x0009, "ACME", create=True).add_new(0x01, "LO", value)
    return ds


def test_a_private_element_is_scripted_by_group_creator_and_element() -> None:
    out = only(_with_private(), "0009[ACME]01", "@hash(this,6)")
    assert out[0x0009, 0x1001].value == "125934"  # usmd5("secret")


def test_a_private_element_is_read_by_group_creator_and_element() -> None:
    out = only(_with_private(), STUDY_ID, "@contents(0009[ACME]01)")
    assert out.StudyID == "secret"


def test_a_private_element_of_another_creator_is_not_scripted() -> None:
    out = only(_with_private(), "0009[OTHER]01", "@remove()")
    assert out[0x0009, 0x1001].value == "secret"


def test_round_of_an_age_with_a_superscript_digit_reads_only_ascii_digits() -> None:
    out = only(dataset(PatientAge="04\u00b9Y"), "00101010", "@round(this,5)")
    assert out.PatientAge == "05\u00b9Y"  # 4 rounds to 5; the superscript is no digit
