"""What a research coordinator gives to query/retrieve, and the spreadsheet given back.

An accession list (:func:`parse_accession_list`) is text with one key per line, as the RSNA
Anonymizer reads it: an accession number, or ``SI:`` and a study instance UID; blank lines
and anything after ``//`` are ignored, and a key given twice is marked so that it is
retrieved once and reported per line. A batch file (:func:`read_batch`) is a CSV or Excel
sheet whose header names some of PatientID, AccessionNumber, StudyDate and Modality; a
results file that :func:`write_batch_results` wrote can be read back, its found studies by
UID. Patient names and IDs are PHI: they go into the results file the user asked for, never
into a :class:`RequestError`, whose messages name lines, rows and columns instead of values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from openpyxl.utils import get_column_letter

from shared.qr.spreadsheets import SpreadsheetError, Value, decode_text, read_table, write_table

ACCESSION_MAX = 16  # AccessionNumber is SH
PATIENT_ID_MAX = 64  # PatientID is LO
UID_MAX = 64
UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
MODALITY = re.compile(r"[A-Z0-9_]{1,16}")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PROBLEMS_SHOWN = 10

RESULT_HEADER = ("Row", "Status", "Reason", "PatientName", "PatientID", "StudyDate",
                 "AccessionNumber", "Modalities", "Series", "Instances", "StudyInstanceUID",
                 "AlreadyImported")

# Header names after _normal, and the field each fills; "display" names say which column.
COLUMNS = {
    "patientid": "patient_id",
    "accessionnumber": "accession", "accession": "accession",
    "studydate": "study_date", "date": "study_date",
    "modality": "modality",
    "studyinstanceuid": "study_uid", "studyuid": "study_uid",
    "status": "status",
}
DISPLAY = {"patient_id": "PatientID", "accession": "AccessionNumber", "study_date": "StudyDate",
           "modality": "Modality", "study_uid": "StudyInstanceUID", "status": "Status"}
NO_COLUMNS = "the file has none of the columns PatientID, AccessionNumber, StudyDate, Modality"

# Study dates: YYYYMMDD or YYYY-MM-DD; ranges of two (either may be left out with YYYYMMDD).
_COMPACT = r"(\d{8})"
_EITHER = r"(\d{8}|\d{4}-\d{2}-\d{2})"
_DASH = r"[-\u2013]"  # a spreadsheet program may turn " - " into an en dash
DATE_FORMS = tuple(re.compile(form, re.IGNORECASE) for form in (
    _EITHER,
    rf"{_COMPACT}\s*{_DASH}\s*{_COMPACT}",
    rf"{_EITHER}\s+(?:{_DASH}|to)\s+{_EITHER}",
    rf"{_COMPACT}\s*{_DASH}()",
    rf"(){_DASH}\s*{_COMPACT}",
))
DATE_HELP = ("use YYYYMMDD or YYYY-MM-DD, or a range such as 20200101-20201231, "
             "2020-01-01 to 2020-12-31, 20200101- or -20201231")


class RequestError(ValueError):
    """A request that cannot be used as given; the message names the line or row and what
    to fix, and does not repeat the values (they can be PHI)."""


@dataclass(frozen=True)
class ListKey:
    """One key of an accession list: its 1-based line, ``kind`` ("accession" or "study-uid"),
    the value, and for a repeated key the line of its first occurrence."""

    line: int
    kind: str
    value: str
    duplicate_of: int | None = None


@dataclass(frozen=True)
class BatchRow:
    """One request of a batch file, ``row`` numbered as a spreadsheet program shows it.
    ``study_date`` is "", YYYYMMDD or a DICOM range (``A-B``, ``A-``, ``-B``); ``modality`` is
    upper case, several joined by a backslash; ``study_uid`` is set for a found study of a
    results file (or a StudyInstanceUID column). A row with an ``error`` is to be reported,
    not queried; its fields then hold the text as read."""

    row: int
    patient_id: str = ""
    accession: str = ""
    study_date: str = ""
    modality: str = ""
    study_uid: str = ""
    error: str = ""


@dataclass(frozen=True)
class BatchResult:
    """One line of the results file: a study found for the request of ``row``, or the request
    that found nothing ("not found") or failed ("error", with its ``reason``)."""

    row: int
    status: str
    reason: str = ""
    patient_name: str = ""
    patient_id: str = ""
    study_date: str = ""
    accession: str = ""
    modalities: str = ""
    series: int | None = None
    instances: int | None = None
    study_uid: str = ""
    already_imported: bool = False


def valid_uid(text: str) -> bool:
    """Whether ``text`` is a UID: numbers without leading zeros joined by dots, at most 64
    characters."""
    return len(text) <= UID_MAX and UID.fullmatch(text) is not None


def parse_accession_list(text: str) -> list[ListKey]:
    """The keys of an accession list, in order: one per line, blank lines and text after
    ``//`` ignored, ``SI:`` (any case) before a study instance UID, a repeated key (same kind
    and value) returned with ``duplicate_of``. An invalid UID, or an accession number longer
    than 16 characters or holding a backslash, a wildcard (``*``, ``?``) or a control
    character, raises one :class:`RequestError` naming every such line."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    keys: list[ListKey] = []
    first: dict[tuple[str, str], int] = {}
    problems: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        key = line.split("//", 1)[0].strip()
        if not key:
            continue
        if key[:3].upper() == "SI:":
            kind, value = "study-uid", key[3:].strip()
            if not valid_uid(value):
                problems.append(f"line {number}: the study instance UID after SI: is not a "
                                "valid UID (numbers without leading zeros joined by dots, at "
                                "most 64 characters)")
                continue
        else:
            kind, value = "accession", key
            problem = _key_problem(value, ACCESSION_MAX)
            if problem:
                problems.append(f"line {number}: the accession number {problem}")
                continue
        seen = first.setdefault((kind, value), number)
        keys.append(ListKey(number, kind, value, None if seen == number else seen))
    if problems:
        raise RequestError(_joined(problems))
    return keys


def read_accession_file(path: Path) -> list[ListKey]:
    """The keys of the accession list in ``path`` (UTF-8, else latin-1; UTF-16 with a byte
    order mark), as :func:`parse_accession_list` reads them."""
    text = decode_text(path.read_bytes())
    if "\x00" in text:
        raise RequestError("the accession list holds binary data, not text: give a text file "
                           "with one accession number per line")
    return parse_accession_list(text)


def read_batch(path: Path) -> list[BatchRow]:
    """The requests of a ``.csv`` or ``.xlsx`` batch file: the first non-empty row is the
    header, naming some of PatientID, AccessionNumber (or Accession), StudyDate (or Date) and
    Modality in any case, spaces, underscores and hyphens ignored; other columns and empty
    rows are ignored. A results file (StudyInstanceUID and Status columns) gives its "found"
    rows with ``study_uid``. A value that cannot be queried sets the row's ``error``; a file
    that cannot be used raises :class:`RequestError`."""
    try:
        table = read_table(path)
    except SpreadsheetError as error:
        raise RequestError(str(error)) from None
    if not table:
        raise RequestError(f"{NO_COLUMNS} (it is empty)")
    header_row, header = table[0]
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        field = COLUMNS.get(_normal(name))
        if field is None:
            continue
        if field in columns:
            raise RequestError(
                f"row {header_row}: the columns {get_column_letter(columns[field] + 1)} and "
                f"{get_column_letter(index + 1)} both name {DISPLAY[field]}: keep one")
        columns[field] = index
    if not columns.keys() - {"status"}:
        raise RequestError(f"{NO_COLUMNS} (the first non-empty row, row {header_row}, is read "
                           "as the header)")
    results = {"study_uid", "status"} <= columns.keys()
    rows: list[BatchRow] = []
    for number, cells in table[1:]:
        values = {field: cells[index] if index < len(cells) else ""
                  for field, index in columns.items()}
        if results:
            if values["status"].lower() == "found":
                rows.append(_result_row(number, values))
        elif any(value for field, value in values.items() if field != "status"):
            rows.append(_request_row(number, values))
    return rows


def write_batch_results(results: Sequence[BatchResult], path: Path) -> None:
    """Write ``results`` in order to ``path``, an ``.xlsx`` workbook (bold header row, frozen)
    or a UTF-8 ``.csv`` file by its suffix, with the columns Row, Status, Reason, PatientName,
    PatientID, StudyDate, AccessionNumber, Modalities, Series, Instances, StudyInstanceUID and
    AlreadyImported; atomically, through a temporary file in the same folder. Values that
    start like a formula stay text (see :mod:`shared.qr.spreadsheets`)."""
    rows: list[list[Value]] = [
        [result.row, result.status, result.reason, result.patient_name, result.patient_id,
         result.study_date, result.accession, result.modalities, result.series,
         result.instances, result.study_uid,
         ("yes" if result.already_imported else "no") if result.status == "found" else ""]
        for result in results
    ]
    try:
        write_table(path, RESULT_HEADER, rows)
    except SpreadsheetError as error:
        raise RequestError(str(error)) from None


def study_date_query(text: str) -> str | None:
    """``text`` (a date or range in a form :data:`DATE_FORMS` accepts) as a DICOM date or
    range, "" for "", or None when it is not a date, not a calendar day or a range that ends
    before it starts."""
    text = text.strip()
    if not text:
        return ""
    for form in DATE_FORMS:
        match = form.fullmatch(text)
        if match is None:
            continue
        days = [_day(part) if part else "" for part in match.groups()]
        if None in days:
            return None
        if len(days) == 1:
            return days[0]
        start, end = days
        if start and end and start > end:
            return None
        return f"{start}-{end}"
    return None


def _day(text: str) -> str | None:
    digits = text.replace("-", "")
    try:
        date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None
    return digits


def _normal(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def _key_problem(value: str, limit: int) -> str:
    if len(value) > limit:
        return f"has {len(value)} characters, at most {limit} are allowed"
    if "\\" in value:
        return "holds a backslash, which DICOM reads as between two values"
    if "*" in value or "?" in value:
        return "holds * or ?, which a PACS reads as a wildcard"
    if CONTROL.search(value):
        return "holds a control character"
    return ""


def _request_row(number: int, values: dict[str, str]) -> BatchRow:
    patient_id, accession = values.get("patient_id", ""), values.get("accession", "")
    written_date, written_modality = values.get("study_date", ""), values.get("modality", "")
    study_uid = values.get("study_uid", "")
    problems = []
    for name, value, limit in (("PatientID", patient_id, PATIENT_ID_MAX),
                               ("AccessionNumber", accession, ACCESSION_MAX)):
        problem = _key_problem(value, limit)
        if problem:
            problems.append(f"{name} {problem}")
    study_date = study_date_query(written_date)
    if study_date is None:
        problems.append(f"StudyDate is not a date or range of dates: {DATE_HELP}")
    modalities = [part.strip().upper() for part in re.split(r"[\\,]", written_modality)]
    modality = "\\".join(modalities) if written_modality else ""
    if written_modality and not all(MODALITY.fullmatch(part) for part in modalities):
        problems.append("Modality is not a DICOM modality such as CT or MR (separate several "
                        "with commas)")
    if study_uid and not valid_uid(study_uid):
        problems.append("StudyInstanceUID is not a valid UID")
    if problems:
        return BatchRow(number, patient_id, accession, written_date, written_modality,
                        study_uid, "; ".join(problems))
    return BatchRow(number, patient_id, accession, study_date or "", modality, study_uid)


def _result_row(number: int, values: dict[str, str]) -> BatchRow:
    # A found study is retrieved by its UID; the other values only describe it.
    study_uid = values["study_uid"]
    error = "" if valid_uid(study_uid) else "StudyInstanceUID is not a valid UID"
    return BatchRow(number, values.get("patient_id", ""), values.get("accession", ""),
                    study_date_query(values.get("study_date", "")) or "", "", study_uid, error)


def _joined(problems: list[str]) -> str:
    shown = "; ".join(problems[:PROBLEMS_SHOWN])
    if len(problems) > PROBLEMS_SHOWN:
        shown += f"; and {len(problems) - PROBLEMS_SHOWN} more lines"
    return shown


__all__ = [
    "BatchResult",
    "BatchRow",
    "ListKey",
    "RequestError",
    "parse_accession_list",
    "read_accession_file",
    "read_batch",
    "study_date_query",
    "valid_uid",
    "write_batch_results",
]
