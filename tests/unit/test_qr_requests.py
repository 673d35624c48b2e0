"""What a research coordinator gives to query/retrieve (accession lists, batch sheets) and the
results spreadsheet given back (shared/qr/requests.py)."""

from __future__ import annotations

import stat
import zipfile
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pytest

from shared.qr.requests import (
    DATE_HELP,
    BatchResult,
    BatchRow,
    ListKey,
    RequestError,
    parse_accession_list,
    read_accession_file,
    read_batch,
    study_date_query,
    write_batch_results,
)

UID_A = "1.2.840.113619.2.55.3.604688119.971.1234567890.1"
UID_B = "1.3.6.1.4.1.9590.100.1.2.0.10"
SHEET = "xl/worksheets/sheet1.xml"


def _xlsx(path: Path, rows: list[list[object]]) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.worksheets[0]
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def _patch(path: Path, part: str, old: bytes, new: bytes) -> None:
    """Change the XML of one part of a workbook, as another program might have written it."""
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    assert old in parts[part]
    parts[part] = parts[part].replace(old, new)
    with zipfile.ZipFile(path, "w") as target:
        for name, data in parts.items():
            target.writestr(name, data)


# Accession lists


def test_accession_list_ignores_blank_lines_and_comments() -> None:
    text = "// study list for project X\n\nACC001\n   \nACC002 // second visit\n//ACC003\n"
    assert parse_accession_list(text) == [
        ListKey(3, "accession", "ACC001"),
        ListKey(5, "accession", "ACC002"),
    ]


def test_accession_list_strips_surrounding_whitespace_but_keeps_inner_spaces() -> None:
    assert parse_accession_list("\t  AB 12  \n") == [ListKey(1, "accession", "AB 12")]


def test_accession_list_reads_si_keys_as_study_uids_in_any_case() -> None:
    keys = parse_accession_list(f"SI:{UID_A}\nsi: {UID_B}\nSi:1.2.3 // a comment\n")
    assert keys == [
        ListKey(1, "study-uid", UID_A),
        ListKey(2, "study-uid", UID_B),
        ListKey(3, "study-uid", "1.2.3"),
    ]


def test_accession_list_marks_repeated_accession_numbers_with_the_first_line() -> None:
    keys = parse_accession_list("A1\nA2\nA1\n a1\nA1\n")
    assert [key.duplicate_of for key in keys] == [None, None, 1, None, 1]
    assert keys[3] == ListKey(4, "accession", "a1")  # compared exactly: another key


def test_accession_list_marks_repeated_study_uids_but_not_an_accession_of_the_same_text() -> None:
    keys = parse_accession_list("SI:1.2.3\n1.2.3\nsi:1.2.3\nSI: 1.2.3 // again\n")
    assert keys == [
        ListKey(1, "study-uid", "1.2.3"),
        ListKey(2, "accession", "1.2.3"),
        ListKey(3, "study-uid", "1.2.3", duplicate_of=1),
        ListKey(4, "study-uid", "1.2.3", duplicate_of=1),
    ]


def test_accession_list_accepts_crlf_line_endings_and_a_byte_order_mark() -> None:
    keys = parse_accession_list("\ufeffACC1\r\n\r\nACC2\r\nSI:1.2.3\r\n")
    assert keys == [
        ListKey(1, "accession", "ACC1"),
        ListKey(3, "accession", "ACC2"),
        ListKey(4, "study-uid", "1.2.3"),
    ]


@pytest.mark.parametrize("uid", ["1.2..3", "1.02.3", "1.2.3.", ".1.2", "1.2.a", "",
                                 "1." * 32 + "1"])
def test_accession_list_refuses_an_invalid_uid_naming_the_line_not_the_value(uid: str) -> None:
    text = "ACC1\n\nA2\n\n\n\nSI:" + uid + "\n"
    with pytest.raises(RequestError, match=r"^line 7: the study instance UID after SI:") as caught:
        parse_accession_list(text)
    if uid:
        assert uid not in str(caught.value)


def test_accession_list_accepts_zero_components_and_a_64_character_uid() -> None:
    uid = "1.2.0." + "9" * 58
    assert len(uid) == 64
    assert parse_accession_list(f"SI:{uid}\nSI:1.0.0.3")[0].value == uid


def test_accession_list_refuses_an_accession_number_longer_than_16_characters() -> None:
    sixteen = "A" * 16
    assert parse_accession_list(sixteen)[0].value == sixteen
    with pytest.raises(RequestError, match=r"^line 2: the accession number has 17 characters"):
        parse_accession_list(f"{sixteen}\n{sixteen}B\n")


@pytest.mark.parametrize("key", ["AB*", "A?C", "A\\B", "A\x01B"])
def test_accession_list_refuses_wildcards_backslashes_and_control_characters(key: str) -> None:
    with pytest.raises(RequestError, match=r"^line 1: the accession number holds"):
        parse_accession_list(key)


def test_accession_list_names_every_bad_line_in_one_error() -> None:
    with pytest.raises(RequestError) as caught:
        parse_accession_list("OK\n" + "X" * 20 + "\nSI:1..2\n")
    message = str(caught.value)
    assert "line 2:" in message and "line 3:" in message and "X" * 20 not in message


def test_accession_file_reads_utf8_latin1_and_utf16(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes("\ufeffMÜ1\r\nSI:1.2.3\r\n".encode())
    assert [key.value for key in read_accession_file(path)] == ["MÜ1", "1.2.3"]
    path.write_bytes("MÜ1\nÉ2\n".encode("latin-1"))
    assert [key.value for key in read_accession_file(path)] == ["MÜ1", "É2"]
    path.write_bytes("MÜ1\r\nA2\r\n".encode("utf-16"))
    assert [key.value for key in read_accession_file(path)] == ["MÜ1", "A2"]


def test_accession_file_that_is_binary_is_refused_as_not_text(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "list.txt", [["AccessionNumber"], ["A1"]])
    with pytest.raises(RequestError, match="not text"):
        read_accession_file(path)


# Batch files: CSV


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_batch_csv_is_read_with_each_delimiter(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "batch.csv"
    lines = [["PatientID", "AccessionNumber", "StudyDate", "Modality"],
             ["P1", "A1", "20200101", "CT"],
             ["P2", "", "", ""]]
    path.write_text("\n".join(delimiter.join(line) for line in lines) + "\n", encoding="utf-8")
    assert read_batch(path) == [
        BatchRow(2, patient_id="P1", accession="A1", study_date="20200101", modality="CT"),
        BatchRow(3, patient_id="P2"),
    ]


def test_batch_csv_value_holding_another_delimiter_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_text("PatientID;Modality\nDOE, J;MR\n", encoding="utf-8")
    assert read_batch(path) == [BatchRow(2, patient_id="DOE, J", modality="MR")]


def test_batch_csv_with_a_byte_order_mark_matches_its_first_column(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_bytes("\ufeffPatientID,Date\r\nP1,2021-03-04\r\n".encode())
    assert read_batch(path) == [BatchRow(2, patient_id="P1", study_date="20210304")]


def test_batch_csv_in_latin1_is_read(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_bytes("Patient ID;Accession\nMÜLLER-7;Ä1\n".encode("latin-1"))
    assert read_batch(path) == [BatchRow(2, patient_id="MÜLLER-7", accession="Ä1")]


def test_batch_csv_rows_are_numbered_as_a_spreadsheet_shows_them(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_text('\n\nAccession,Note\nA1,"two\nlines"\n,\n,only a note\nA2,\n',
                    encoding="utf-8")
    assert read_batch(path) == [BatchRow(4, accession="A1"), BatchRow(7, accession="A2")]


def test_batch_csv_rows_end_only_at_line_breaks_a_csv_file_knows(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_text("Accession,Note\nA1,see\u2028below\x0cpage\nA2,\n", encoding="utf-8")
    assert read_batch(path) == [BatchRow(2, accession="A1"), BatchRow(3, accession="A2")]


def test_batch_csv_that_is_really_a_workbook_is_refused(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "batch.csv", [["PatientID"], ["P1"]])
    with pytest.raises(RequestError, match=r"name it \.xlsx"):
        read_batch(path)


# Batch files: Excel


def test_batch_xlsx_cells_of_every_type_become_text(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "batch.xlsx", [
        ["Patient ID", "Accession_Number", "study-date", "MODALITY"],
        [12345, 20201234.0, datetime(2021, 3, 4, 10, 30), "ct"],
        [12345.0, "00042", date(2020, 1, 2), "MR"],
        ["P 3", 7, 20191231, None],
        [1.5, None, "20190101-20191231", "ct,pt"],
    ])
    assert read_batch(path) == [
        BatchRow(2, patient_id="12345", accession="20201234", study_date="20210304",
                 modality="CT"),
        BatchRow(3, patient_id="12345", accession="00042", study_date="20200102", modality="MR"),
        BatchRow(4, patient_id="P 3", accession="7", study_date="20191231"),
        BatchRow(5, patient_id="1.5", study_date="20190101-20191231", modality="CT\\PT"),
    ]


def test_batch_xlsx_numbers_stored_with_a_fraction_of_zero_are_whole(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "batch.xlsx", [["PatientID", "Accession"], [12345, 678], [9, 1]])
    _patch(path, SHEET, b"<v>12345</v>", b"<v>12345.0</v>")
    _patch(path, SHEET, b"<v>678</v>", b"<v>6.78E2</v>")
    assert read_batch(path)[0] == BatchRow(2, patient_id="12345", accession="678")


def test_batch_xlsx_ignores_other_columns_and_empty_rows(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "batch.xlsx", [
        [None],
        ["Note", "accession", "Site"],
        ["first", "A1", "north"],
        [None, None, None],
        ["only a note", None, "south"],
        [None, "  A2  ", None],
    ])
    assert read_batch(path) == [BatchRow(3, accession="A1"), BatchRow(6, accession="A2")]


def test_batch_xlsx_reads_to_the_end_when_the_sheet_size_it_claims_is_wrong(
    tmp_path: Path,
) -> None:
    path = _xlsx(tmp_path / "batch.xlsx", [["Accession"], ["A1"], ["A2"], ["A3"]])
    _patch(path, SHEET, b'<dimension ref="A1:A4" />', b'<dimension ref="A1:A2" />')
    assert [row.accession for row in read_batch(path)] == ["A1", "A2", "A3"]


def test_batch_without_a_known_column_is_refused(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "batch.xlsx", [["Name", "Birth"], ["DOE^J", "19700101"]])
    with pytest.raises(RequestError, match=r"^the file has none of the columns PatientID, "
                                           r"AccessionNumber, StudyDate, Modality"):
        read_batch(path)


def test_batch_that_is_empty_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(RequestError, match=r"none of the columns .* empty"):
        read_batch(path)


def test_batch_with_two_columns_of_one_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_text("Date,PatientID,Study Date\n20200101,P1,20200202\n", encoding="utf-8")
    with pytest.raises(RequestError, match="row 1: the columns A and C both name StudyDate"):
        read_batch(path)


# Values of a row


@pytest.mark.parametrize(("written", "query"), [
    ("20200131", "20200131"),
    ("2020-01-31", "20200131"),
    ("20200101-20201231", "20200101-20201231"),
    ("20200101 - 20201231", "20200101-20201231"),
    ("2020-01-01 - 2020-12-31", "20200101-20201231"),
    ("2020-01-01 to 2020-12-31", "20200101-20201231"),
    ("2020-01-01 TO 20201231", "20200101-20201231"),
    ("2020-01-01 \u2013 2020-12-31", "20200101-20201231"),
    ("20200101-", "20200101-"),
    ("-20201231", "-20201231"),
    ("20200101-20200101", "20200101-20200101"),
    ("", ""),
])
def test_study_dates_in_the_accepted_forms_become_dicom_dates(written: str, query: str) -> None:
    assert study_date_query(written) == query


@pytest.mark.parametrize("written", [
    "2021-13-01", "20210230", "31.12.2020", "2020/01/01", "2020-01-01-2020-12-31",
    "20201231-20200101", "202001", "yesterday", "2020-1-5", "20200101--20201231",
])
def test_study_dates_not_in_an_accepted_form_set_the_row_error(
    tmp_path: Path, written: str,
) -> None:
    assert study_date_query(written) is None
    path = tmp_path / "batch.csv"
    path.write_text(f"PatientID,StudyDate\nP1,{written}\n", encoding="utf-8")
    (row,) = read_batch(path)
    assert row.error == f"StudyDate is not a date or range of dates: {DATE_HELP}"
    assert (row.patient_id, row.study_date) == ("P1", written)


def test_batch_row_errors_name_each_bad_column_without_its_value(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "batch.xlsx", [
        ["PatientID", "AccessionNumber", "Modality"],
        ["P" * 65, "A" * 17, "C T"],
        ["DOE*", "A1", "CT"],
        ["P2", "A2", "CT"],
    ])
    bad, wildcard, good = read_batch(path)
    assert bad.error == ("PatientID has 65 characters, at most 64 are allowed; AccessionNumber "
                         "has 17 characters, at most 16 are allowed; Modality is not a DICOM "
                         "modality such as CT or MR (separate several with commas)")
    assert wildcard.error == "PatientID holds * or ?, which a PACS reads as a wildcard"
    assert good == BatchRow(4, patient_id="P2", accession="A2", modality="CT")


# Results


FOUND = BatchResult(2, status="found", patient_name="DOE^JANE", patient_id="P1",
                study_date="20200101", accession="A1", modalities="CT\\SR", series=3,
                instances=120, study_uid=UID_A, already_imported=True)
RESULTS = [
    FOUND,
    BatchResult(2, status="found", patient_name="DOE^JANE", patient_id="P1", study_date="20200202",
            accession="A1", modalities="MR", series=1, instances=10, study_uid=UID_B),
    BatchResult(3, status="not found", patient_id="P404"),
    BatchResult(4, status="error", reason="the PACS refused the query", accession="A9"),
]


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_results_read_back_give_the_found_studies_by_uid(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"results{suffix}"
    write_batch_results(RESULTS, path)
    assert read_batch(path) == [
        BatchRow(2, patient_id="P1", accession="A1", study_date="20200101", study_uid=UID_A),
        BatchRow(3, patient_id="P1", accession="A1", study_date="20200202", study_uid=UID_B),
    ]
    assert [item.name for item in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_results_xlsx_has_a_bold_frozen_header_and_typed_cells(tmp_path: Path) -> None:
    path = tmp_path / "results.xlsx"
    write_batch_results(RESULTS, path)
    sheet = openpyxl.load_workbook(path).worksheets[0]
    header = [cell.value for cell in sheet[1]]
    assert header == ["Row", "Status", "Reason", "PatientName", "PatientID", "StudyDate",
                      "AccessionNumber", "Modalities", "Series", "Instances",
                      "StudyInstanceUID", "AlreadyImported"]
    assert all(cell.font.b for cell in sheet[1])
    assert sheet.freeze_panes == "A2"
    assert [cell.value for cell in sheet[2]] == [2, "found", None, "DOE^JANE", "P1", "20200101",
                                                "A1", "CT\\SR", 3, 120, UID_A, "yes"]
    assert [cell.value for cell in sheet[4]][:5] == [3, "not found", None, None, "P404"]
    assert sheet.cell(row=3, column=12).value == "no"
    assert sheet.cell(row=4, column=12).value is None
    assert sheet.max_row == 5
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_results_csv_is_utf8_with_the_same_columns(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    write_batch_results([BatchResult(2, status="found", patient_name="MÜLLER^ÉVA", series=None)],
                        path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == [
        "Row,Status,Reason,PatientName,PatientID,StudyDate,AccessionNumber,Modalities,Series,"
        "Instances,StudyInstanceUID,AlreadyImported",
        "2,found,,MÜLLER^ÉVA,,,,,,,,no",
    ]


RISKY = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-123", "@SUM(A1)", "=1+1"]


def test_results_xlsx_keeps_values_that_start_like_formulas_as_text(tmp_path: Path) -> None:
    path = tmp_path / "results.xlsx"
    write_batch_results([BatchResult(2, status="found", patient_name=RISKY[0], patient_id=RISKY[1],
                                 accession=RISKY[2], modalities=RISKY[3], reason=RISKY[4],
                                 study_uid=UID_A)], path)
    sheet = openpyxl.load_workbook(path).worksheets[0]
    cells = [sheet.cell(row=2, column=column) for column in (4, 5, 7, 8, 3)]
    assert [cell.value for cell in cells] == RISKY
    assert [cell.data_type for cell in cells] == ["s"] * 5
    assert all(cell.quotePrefix for cell in cells)
    assert not sheet["B2"].quotePrefix
    with zipfile.ZipFile(path) as archive:
        assert b"<f>" not in archive.read("xl/worksheets/sheet1.xml")
    (row,) = read_batch(path)
    assert (row.patient_id, row.accession) == ("+1+1", "-123")


def test_results_csv_puts_a_quote_before_values_that_start_like_formulas(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    write_batch_results([BatchResult(2, status="found", patient_name=RISKY[0], patient_id="-123",
                                 accession="@A1", modalities="=CT", study_uid=UID_A,
                                 study_date="20200101-20201231")], path)
    text = path.read_text(encoding="utf-8")
    assert "'-123" in text and "'@A1" in text and "'=CT" in text
    assert "'=HYPERLINK" in text and ",20200101-20201231," in text
    (row,) = read_batch(path)
    assert (row.patient_id, row.accession) == ("-123", "@A1")


def test_results_replace_an_earlier_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    write_batch_results(RESULTS, path)
    write_batch_results(RESULTS[2:3], path)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2


def test_results_with_control_characters_are_written_with_spaces(tmp_path: Path) -> None:
    path = tmp_path / "results.xlsx"
    write_batch_results([BatchResult(2, status="found", patient_name="DOE\x00^J\nX")], path)
    assert openpyxl.load_workbook(path).worksheets[0]["D2"].value == "DOE ^J X"


def test_results_only_found_rows_of_a_results_file_are_requests(tmp_path: Path) -> None:
    path = tmp_path / "edited.csv"
    path.write_text(f"Row,Status,StudyInstanceUID,PatientID\n2,Found,{UID_A},P1\n"
                    f"3,not found,,P2\n4,error,{UID_B},P3\n5, found ,1..2,P4\n",
                    encoding="utf-8")
    assert read_batch(path) == [
        BatchRow(2, patient_id="P1", study_uid=UID_A),
        BatchRow(5, patient_id="P4", study_uid="1..2",
                 error="StudyInstanceUID is not a valid UID"),
    ]


# Files that are not batch files


@pytest.mark.parametrize("name", ["batch.txt", "batch.xls", "batch"])
def test_batch_with_another_extension_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("PatientID\nP1\n", encoding="utf-8")
    with pytest.raises(RequestError, match=r"must be \.csv or \.xlsx"):
        read_batch(path)


def test_results_with_another_extension_are_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    with pytest.raises(RequestError, match=r"must be \.csv or \.xlsx"):
        write_batch_results(RESULTS, tmp_path / "results.ods")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"PatientID\nP1\n", b"", b"PK\x03\x04broken",
                                     b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100])
def test_batch_xlsx_that_is_not_a_workbook_is_refused_clearly(
    tmp_path: Path, content: bytes,
) -> None:
    path = tmp_path / "batch.xlsx"
    path.write_bytes(content)
    with pytest.raises(RequestError, match="not an Excel workbook that can be read") as caught:
        read_batch(path)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_batch_xlsx_zip_without_a_workbook_inside_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "batch.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a workbook")
    with pytest.raises(RequestError, match="not an Excel workbook"):
        read_batch(path)


def test_batch_file_that_is_missing_raises_the_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_batch(tmp_path / "absent.xlsx")
    with pytest.raises(FileNotFoundError):
        read_batch(tmp_path / "absent.csv")
