"""CTP DicomAnonymizer script files: the XML and properties formats, the scripts refused
when they are loaded (with the line to fix), the keep and removal switches, the
DeIdentificationMethodCodeSeq codes, and the RSNA Anonymizer's own dialect."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from shared.deid.ctp_script import ScriptLoadError, load_script, parse_anonymizer_script
from shared.deid.lookup import LookupTable
from tests.ctp_support import (
    PSEUDONYMS,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    dataset,
    element,
    keep,
    only,
    param,
    remove,
    run,
    xml,
)

PATIENT_ID = "00100020"
PATIENT_NAME = "00100010"
STUDY_ID = "00200010"


def _load_error(text: str) -> str:
    with pytest.raises(ScriptLoadError) as raised:
        parse_anonymizer_script(text, "site.script")
    return str(raised.value)


# ---- refused when loaded -----------------------------------------------------------------


@pytest.mark.parametrize(("script", "reason"), [
    ("@frobnicate(this)", "unknown function @frobnicate"),
    ("@Hash(this)", "unknown function @Hash"),  # names are case-sensitive
    ("@hash(PatientIdd)", "unknown element name 'PatientIdd'"),
    ("@hash(PatientID", "missing ')'"),
    ("@param(@NOPE)", "parameter @NOPE is not defined"),
    ("@hash(this,@LENGTH)", "parameter @LENGTH is not defined"),
    ("@encrypt(this,@KEY)", "@encrypt is not supported"),
    ("@decrypt(this,@KEY)", "@decrypt is not supported"),
    ("@call(plugin,this)", "@call"),
    ("user@ host", "'@' must begin a function call"),
    ("@keep", "@keep must be followed by '('"),
    ("@if(this,exists){A}", "must be followed by {...}{...}"),
    ("@if(this,exists){A}{B", "missing '}'"),
    ("@integer(PatientID)", "@integer needs an element and a key type"),
    ("@incrementdate(this,PatientIdd,offsets)", "unknown element name 'PatientIdd'"),
])
def test_an_xml_script_that_cannot_run_is_refused_with_its_line(script: str, reason: str) -> None:
    message = _load_error(xml(param("P", "1"), element(PATIENT_ID, script, "PatientID")))
    assert "site.script, line 3 (PatientID)" in message
    assert reason in message


def test_a_properties_script_that_cannot_run_is_refused_with_its_line() -> None:
    text = ("# CTP script\n"
            "param.UIDROOT=1.2.3\n"
            "\n"
            "set.[0010,0020]PatientID=@hash(this,\\\n"
            "    8)@frobnicate()\n")
    message = _load_error(text)
    assert "site.script, line 4 (PatientID)" in message
    assert "unknown function @frobnicate" in message


def test_an_unknown_target_element_is_refused() -> None:
    assert "line 2" in _load_error(xml(element("PatientIdd", "@empty()")))
    assert "line 1" in _load_error("set.[PatientIdd]Name=@empty()\n")


def test_malformed_xml_is_refused_instead_of_running_no_script_at_all() -> None:
    message = _load_error('<script>\n   <e en="T" t="00100020">@hash(this)</script>\n')
    assert "site.script, line 2" in message and "not well-formed XML" in message


def test_unknown_switches_and_entries_are_refused() -> None:
    assert "unknown removal 'everything'" in _load_error(xml(remove("everything")))
    assert "unknown entry 'bogus.key'" in _load_error("bogus.key=1\n")


def test_disabled_entries_are_not_checked() -> None:
    script = parse_anonymizer_script(
        xml(element(PATIENT_ID, "@frobnicate(this)", enabled=False)), "site.script")
    assert [e.enabled for e in script.entries] == [False]


def test_load_script_reads_a_file_and_names_it_in_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.script"
    good.write_text(xml(element(PATIENT_ID, "@hash(this,8)")), encoding="utf-8")
    assert load_script(good).entries[0].tag == 0x00100020
    bad = tmp_path / "bad.script"
    bad.write_text("set.[0010,0020]PatientID=@nope()\n", encoding="utf-8")
    with pytest.raises(ScriptLoadError, match=r"^bad\.script, line 1"):
        load_script(bad)


# ---- the properties format ---------------------------------------------------------------


def test_a_properties_script_works_like_the_xml_one() -> None:
    text = ("param.UIDROOT=1.2.3.4\n"
            "set.[0010,0020]PatientID=@hash(PatientID,8)\n"
            "set.[0008,0018]SOPInstanceUID=@hashuid(@UIDROOT,this)\n"
            "set.[0008,0020]StudyDate=@hashdate(this,PatientID)\n")
    out = run(dataset(), text)
    assert out.PatientID == "17344760"
    assert out.SOPInstanceUID == "1.2.3.4.62879281199229260709331501011823979299"
    assert out.StudyDate == "20180709"


def test_a_properties_entry_may_name_its_element() -> None:
    out = run(dataset(), "set.[PatientID]=@empty()\n")
    assert "PatientID" in out and out.PatientID == ""


def test_a_commented_properties_entry_counts_as_unscripted() -> None:
    text = ("remove.unspecifiedelements=\n"
            "#set.[0010,0010]PatientName=@keep()\n"
            "set.[0010,0020]PatientID=@keep()\n")
    out = run(dataset(), text)
    assert "PatientName" not in out and out.PatientID == "12345"


def test_properties_escapes_are_removed_before_the_script_sees_it() -> None:
    text = ('set.[0010,0020]PatientID=@contents(this,"\\d")\n'  # reaches the script as "d"
            'set.[0020,0010]StudyID=@contents(this,"\\\\d")\n'  # reaches it as "\d"
            "set.[0008,0008]ImageType=DERIVED\\\\\\\\SECONDARY\n")  # a value separator
    out = run(dataset(PatientID="12dd3", StudyID="12dd3", ImageType="ORIGINAL"), text)
    assert out.PatientID == "123"
    assert out.StudyID == "dd"
    assert list(out.ImageType) == ["DERIVED", "SECONDARY"]


def test_a_properties_switch_is_on_whatever_its_value() -> None:
    ds = dataset()
    ds.add_new(0x50000005, "US", 2)  # CurveDimensions
    assert (0x5000, 0x0005) in run(ds, "remove.unspecifiedelements=yes\n")
    out = run(ds, "remove.unspecifiedelements=yes\nremove.curves=no\n")
    assert (0x5000, 0x0005) not in out


def test_properties_keep_group_keeps_the_group() -> None:
    out = run(dataset(SliceThickness="1.5"), "remove.unspecifiedelements\nkeep.group0018\n")
    assert out.SliceThickness == 1.5 and "Modality" not in out


def test_a_lookup_table_file_is_read_as_java_properties(tmp_path: Path) -> None:
    path = tmp_path / "lookup.properties"
    path.write_bytes(b"# patients\n"
                     b"ptid/12345 = ANON-\\u00c9\n"
                     b"ptid/12\\ 34=SPACED\n"
                     b"ptid/ABC:CONTINUED-\\\n"
                     b"    VALUE\n")
    table = LookupTable.load(path)
    assert len(table) == 3
    assert table.get("ptid", "12345") == "ANON-\u00c9"
    assert table.get("ptid", "ABC") == "CONTINUED-VALUE"
    out = only(dataset(PatientID="12 34"), PATIENT_ID, "@lookup(this,ptid)", lookup=table)
    assert out.PatientID == "SPACED"


def test_a_lookup_table_stops_after_ten_indirections() -> None:
    chain = {f"k/{n}": f"@k/{n + 1}" for n in range(10)}
    assert LookupTable({**chain, "k/10": "END"}).get("k", "0") == "END"
    longer = {f"k/{n}": f"@k/{n + 1}" for n in range(11)}
    assert LookupTable({**longer, "k/11": "END"}).get("k", "0") is None


# ---- enabled, empty and disabled entries -------------------------------------------------


def test_a_disabled_entry_counts_as_unscripted() -> None:
    text = xml(element(PATIENT_NAME, "@empty()", enabled=False))
    assert run(dataset(), text).PatientName == "Smith^John^Q"
    removed = run(dataset(), xml(remove("unspecifiedelements"),
                                 element(PATIENT_NAME, "@empty()", enabled=False)))
    assert "PatientName" not in removed


def test_an_entry_without_en_is_disabled() -> None:
    out = run(dataset(), '<script>\n<e t="00100010">@empty()</e>\n</script>\n')
    assert out.PatientName == "Smith^John^Q"


# ---- removal and keep switches -----------------------------------------------------------


def _with_privates() -> Dataset:
    ds = dataset(StudyID="S")
    ds.private_block(0x0009, "ACME", create=True).add_new(0x01, "LO", "secret")
    philips = ds.private_block(0x7053, "Philips PET Private Group", create=True)
    philips.add_new(0x00, "DS", "1.5")  # SUV scale factor: safe (PS3.15 E.3.10-1)
    philips.add_new(0x01, "LO", "Smith")  # not in the table
    return ds


def test_remove_private_groups_removes_unscripted_private_elements() -> None:
    out = run(_with_privates(), xml(remove("privategroups")))
    assert not any(e.tag.is_private for e in out)


def test_a_scripted_private_element_survives_private_group_removal() -> None:
    out = run(_with_privates(), xml(remove("privategroups"),
                                    element("0009[ACME]01", "@hash(this,6)")))
    assert out[0x0009, 0x1001].value == "125934"
    assert (0x7053, 0x1000) not in out


def test_keep_safe_private_elements_keeps_only_safe_ones_and_their_creators() -> None:
    out = run(_with_privates(), xml(remove("privategroups"), keep("safeprivateelements")))
    assert out[0x7053, 0x1000].value == "1.5"
    assert out[0x7053, 0x0010].value == "Philips PET Private Group"
    assert (0x7053, 0x1001) not in out
    assert (0x0009, 0x1001) not in out


def test_private_groups_stay_without_a_switch() -> None:
    out = run(_with_privates(), xml(element(STUDY_ID, "@keep()")))
    assert out[0x0009, 0x1001].value == "secret"


def test_remove_unspecified_elements_removes_unscripted_private_elements() -> None:
    out = run(_with_privates(), xml(remove("unspecifiedelements")))
    assert not any(e.tag.is_private for e in out)


def test_remove_unspecified_elements_keeps_scripted_kept_and_always_kept_elements() -> None:
    ds = dataset(SliceThickness="1.5", Rows=64, StudyDescription="CT", StudyID="S")
    out = run(ds, xml(remove("unspecifiedelements"), keep("0018"),
                      element(STUDY_ID, "@keep()"), element(PATIENT_ID, "@hash(this,4)")))
    assert out.SOPInstanceUID == SOP_INSTANCE_UID
    assert out.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert out.StudyInstanceUID == STUDY_INSTANCE_UID
    assert (out.SliceThickness, out.Rows, out.StudyID, out.PatientID) == (1.5, 64, "S", "1734")
    for gone in ("StudyDescription", "StudyDate", "Modality", "PatientName",
                 "SeriesInstanceUID"):
        assert gone not in out


def test_keep_groups_do_not_stop_scripts() -> None:
    out = run(dataset(SliceThickness="1.5"), xml(keep("0018"), element("00180050", "@empty()")))
    assert "SliceThickness" in out and out.SliceThickness is None


def _with_overlay_and_curve() -> Dataset:
    ds = dataset()
    ds.add_new(0x60000010, "US", 64)  # OverlayRows
    ds.add_new(0x60000040, "CS", "G")  # OverlayType
    ds.add_new(0x50000005, "US", 2)  # CurveDimensions
    return ds


def test_remove_overlays_removes_overlay_elements_even_when_scripted() -> None:
    out = run(_with_overlay_and_curve(), xml(remove("overlays"),
                                             element("60000010", "@keep()")))
    assert (0x6000, 0x0010) not in out and (0x6000, 0x0040) not in out
    assert out[0x5000, 0x0005].value == 2


def test_overlays_and_curves_survive_unspecified_element_removal_without_their_switch() -> None:
    out = run(_with_overlay_and_curve(), xml(remove("unspecifiedelements")))
    assert out[0x6000, 0x0010].value == 64
    assert out[0x5000, 0x0005].value == 2


def test_remove_curves_alone_removes_nothing() -> None:
    out = run(_with_overlay_and_curve(), xml(remove("curves")))
    assert out[0x5000, 0x0005].value == 2


def test_remove_curves_with_unspecified_elements_removes_curves() -> None:
    out = run(_with_overlay_and_curve(), xml(remove("curves"), remove("unspecifiedelements")))
    assert (0x5000, 0x0005) not in out
    assert out[0x6000, 0x0010].value == 64


# ---- DeIdentificationMethodCodeSeq -------------------------------------------------------

CODES = "00120064"


def _codes(ds: Dataset) -> list[tuple[str, str, str]]:
    return [(i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning)
            for i in ds.DeidentificationMethodCodeSequence]


def test_method_codes_become_code_items() -> None:
    out = run(dataset(), xml(element(CODES, "113100/113107/113108",
                                     "DeIdentificationMethodCodeSeq")))
    assert _codes(out) == [
        ("113100", "DCM", "Basic Application Confidentiality Profile"),
        ("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option"),
        ("113108", "DCM", "Retain Patient Characteristics Option"),
    ]


def test_an_unknown_method_code_is_written_with_an_unknown_scheme() -> None:
    out = only(dataset(), CODES, "reset/99999")
    assert _codes(out) == [("99999", "UNKNOWN", "UNKNOWN")]


def _coded(value: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", "Old"
    return dataset(DeidentificationMethodCodeSequence=Sequence([item]))


def test_method_codes_keep_or_remove_an_existing_sequence() -> None:
    assert _codes(only(_coded("113101"), CODES, "@keep()")) == [("113101", "DCM", "Old")]
    assert _codes(only(_coded("113101"), CODES, "")) == [("113101", "DCM", "Old")]
    assert "DeidentificationMethodCodeSequence" not in only(_coded("113101"), CODES,
                                                            "@remove()")


def test_method_codes_after_reset_replace_an_existing_sequence() -> None:
    out = only(_coded("113101"), CODES, "reset/113100")
    assert [code for code, _, _ in _codes(out)] == ["113100"]


def test_method_codes_are_appended_to_an_existing_sequence() -> None:
    out = only(_coded("113101"), CODES, "113100")
    assert [code for code, _, _ in _codes(out)] == ["113101", "113100"]


def test_every_ps3_16_method_code_has_its_meaning() -> None:
    out = only(dataset(), CODES, "113101/113102")
    assert [scheme for _, scheme, _ in _codes(out)] == ["DCM", "DCM"]


# ---- the RSNA Anonymizer's dialect -------------------------------------------------------

RSNA = xml(
    element(PATIENT_ID, "@ptid", "PatientID"),
    element(PATIENT_NAME, "@ptid", "PatientName"),
    element("00080018", "@uid", "SOPInstanceUID"),
    element("00080016", "", "SOPClassUID"),
    element("0020000D", "@uid", "StudyInstanceUID"),
    element("0020000E", "@uid", "SeriesInstanceUID"),
    element("00080060", "", "Modality", enabled=False),
    element("00081110", "", "ReferencedStudySequence"),
    element("00081155", "@uid", "ReferencedSOPInstanceUID"),
    element("00081030", "@empty()", "StudyDescription"),
    element("00080050", "@remove()", "AccessionNumber"),
    element("00080020", "@hashdate", "StudyDate"),
)


def test_bare_rsna_operations_select_the_rsna_dialect() -> None:
    assert parse_anonymizer_script(RSNA).dialect == "rsna"
    for operation in ("@uid", "@ptid", "@acc", "@hashdate"):
        text = xml(element("00080050", operation))
        assert parse_anonymizer_script(text).dialect == "rsna"
    assert parse_anonymizer_script(xml(element("00080020", "@hashdate(this,PatientID)"))
                                   ).dialect == "ctp"


def test_rsna_dialect_keeps_listed_elements_and_removes_the_rest_at_every_depth() -> None:
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    item.ReferencedSOPInstanceUID = SOP_INSTANCE_UID
    ds = dataset(StudyDescription="CT CHEST", AccessionNumber="A1", PatientAge="057Y",
                 ReferencedStudySequence=Sequence([item]))
    ds.private_block(0x0009, "ACME", create=True).add_new(0x01, "LO", "secret")
    out = run(ds, RSNA)
    assert (out.PatientID, str(out.PatientName)) == (PSEUDONYMS.patient_id,) * 2
    assert out.SOPInstanceUID != SOP_INSTANCE_UID
    assert out.Modality == "CT"  # en is not consulted; an empty script keeps
    assert "StudyDescription" in out and out.StudyDescription == ""
    assert out.StudyDate == "20200214"  # the patient's offset in the index: 30 days back
    for gone in ("AccessionNumber", "PatientAge"):
        assert gone not in out
    assert not any(e.tag.is_private for e in out)
    referenced = out.ReferencedStudySequence[0]
    assert "ReferencedSOPClassUID" not in referenced
    assert referenced.ReferencedSOPInstanceUID == out.SOPInstanceUID


def test_ctp_dialect_empty_script_empties_where_rsna_dialect_keeps() -> None:
    ctp = run(dataset(StudyDescription="CT"), xml(element("00081030", "")))
    assert "StudyDescription" in ctp and ctp.StudyDescription == ""
    rsna = run(dataset(StudyDescription="CT"), xml(
        element("00081030", ""), element(PATIENT_ID, "@ptid"), element("00080018", "@uid"),
        element("0020000D", "@uid")))
    assert rsna.StudyDescription == "CT"


def test_an_unknown_dialect_is_refused() -> None:
    with pytest.raises(ScriptLoadError, match="unknown script dialect"):
        parse_anonymizer_script(xml(element(PATIENT_ID, "@keep()")), "s", "dicomedit")
