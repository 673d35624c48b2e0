"""Moving a site from the RSNA Anonymizer: its index workbook read into the PHI index.

The Anonymizer's Index tab saves its whole database as an Excel workbook, one row per
study (``shared.index.workbook`` writes the index in the same form). Importing it keeps
what the site's research collection already holds consistent with what this system
sends next: a patient keeps the pseudonymous ID, name and date offset the Anonymizer gave,
a study keeps its pseudonymous UID and accession number (``shared.deid.pseudonymizer``
writes them into new objects of the study), and the 'patient' counter goes on after the
highest imported number, each imported patient numbered as its ID says (so a new object
of an imported patient gets its old pseudonymous ID; see ``patient_counter_key``).

What is refused, and why:

- a workbook whose SITEID (the first part of every ANON-PatientID) is not one and the
  same, or is not the site of an index already in use (or of ``SITE_ID``): its pseudonyms
  would collide with or look like another site's;
- rows that contradict each other (one patient with two pseudonyms, one pseudonym for two
  patients, one study twice with other values), unreadable values, missing columns;
- anything the index already holds otherwise (a patient, study, pseudonym or counter
  number that is there with other values): a conflict, reported by row number.

The import is one transaction: all of it or nothing; a dry run is the same work rolled
back. Rows are staged in a temporary table and checked and merged in SQL, so a workbook
of a million rows needs no more memory than a few thousand. Messages name rows, columns
and reasons, never a value (SITEIDs and sheet names are not PHI).

The sign of DateOffset is not assumed: the rows' dates show it. The index stores a
patient's offset as days into the past (``shared.dicom.dates``); a row whose PHI-StudyDate
lies DateOffset days after its ANON-StudyDate shows the same convention, a row whose date
lies DateOffset days before shows the opposite one (ANON = PHI + DateOffset, which is how
``shared.index.workbook`` writes it). Rows showing both conventions are refused; rows
whose dates differ by neither (dates kept, or changed by other rules) are imported as
written and counted; with no row to show it, the workbook is read as this system writes.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import asyncpg
import openpyxl

from shared.index.phi_index import PATIENT_KEY_TYPE, patient_counter_key, patient_key
from shared.index.workbook import RSNA_COLUMNS
from shared.qr.spreadsheets import cell_text, unprotect

# Rows searched for the header in each sheet.
HEADER_SEARCH_ROWS = 50
# Problems listed in a refusal (the rest are counted).
MAX_LISTED = 20
# Rows sent to the staging table at a time.
STAGE_ROWS = 5_000
# Offsets the index accepts (migration 0009), in days.
MAX_OFFSET_DAYS = 36_500
_PSEUDO_ID = re.compile(r"^(\d{6})-(\d{1,12})$")
_DATE = re.compile(r"^(\d{4})[-./]?(\d{2})[-./]?(\d{2})(?:[ T].*)?$")
_INTEGER = re.compile(r"^[+-]?\d+(?:\.0*)?$")
_EXCEL_EPOCH = date(1899, 12, 30)
_LAST_EXCEL_SERIAL = 2_958_465  # 9999-12-31


class RsnaImportError(ValueError):
    """A workbook that cannot be imported; the message says why, by row and column."""


@dataclass
class ImportSummary:
    """What an import did (or, dry, would do). ``conflicts`` name rows, never values;
    with any, nothing was imported."""

    site_id: str = ""
    site_created: bool = False
    sheets: list[str] = field(default_factory=list)
    rows: int = 0
    patients: int = 0
    studies: int = 0
    patients_imported: int = 0
    patients_present: int = 0
    patient_conflicts: int = 0
    studies_imported: int = 0
    studies_present: int = 0
    study_conflicts: int = 0
    conflicts: list[str] = field(default_factory=list)
    convention: str = ""
    convention_rows: int = 0
    other_dated_rows: int = 0
    next_patient: str = ""
    dry_run: bool = False

    @property
    def imported(self) -> bool:
        return not self.conflicts and not self.dry_run


# ---------------------------------------------------------------------------------------
# Reading the workbook
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cells:
    """One row of the workbook: where it is and its raw values under the RSNA columns."""

    sheet: int
    row: int
    values: tuple[object, ...]


def _header_columns(values: Sequence[object]) -> dict[str, int]:
    found: dict[str, int] = {}
    wanted = {name.lower(): name for name in RSNA_COLUMNS}
    for position, value in enumerate(values):
        name = wanted.get(cell_text(value).lower())
        if name is not None and name not in found:
            found[name] = position
    return found


def _open(path: Path) -> openpyxl.Workbook:
    if path.suffix.lower() != ".xlsx":
        hint = " (save it again as .xlsx)" if path.suffix.lower() == ".xls" else ""
        raise RsnaImportError(f"the RSNA Anonymizer's index must be an .xlsx workbook{hint}")
    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except OSError:
        raise
    except Exception:
        raise RsnaImportError(
            "the file is not an Excel workbook that can be read (it may be damaged, "
            "password-protected or an .xls file renamed): open it and save it again as "
            ".xlsx") from None


class _Workbook:
    """The RSNA rows of a workbook: the first sheet with the Anonymizer's columns (the
    header anywhere in its first rows, other columns ignored), and the sheets after it
    that continue it as ``shared.index.workbook`` does ("Index (2)", ...)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sheet_names: list[str] = []

    def rows(self) -> Iterator[_Cells]:
        with warnings.catch_warnings():
            # Workbook features openpyxl does not read (styles, validation) do not matter.
            warnings.simplefilter("ignore")
            workbook = _open(self.path)
            try:
                yield from self._rows(workbook)
            finally:
                workbook.close()

    def _rows(self, workbook: openpyxl.Workbook) -> Iterator[_Cells]:
        best: tuple[int, str, int] | None = None  # columns found, sheet, row
        first: str | None = None
        for sheet in workbook.worksheets:
            if first is not None and not re.fullmatch(re.escape(first) + r" \(\d+\)",
                                                      sheet.title):
                continue
            reset = getattr(sheet, "reset_dimensions", None)
            if reset is not None:
                reset()  # read to the end whatever size the file claims
            rows = sheet.iter_rows(values_only=True)
            columns: dict[str, int] = {}
            for number, values in enumerate(rows, start=1):
                columns = _header_columns(values)
                if len(columns) == len(RSNA_COLUMNS):
                    break
                if columns and (best is None or len(columns) > best[0]):
                    best = (len(columns), sheet.title, number)
                if number >= HEADER_SEARCH_ROWS:
                    break
            if len(columns) < len(RSNA_COLUMNS):
                continue
            if first is None:
                first = sheet.title
            self.sheet_names.append(sheet.title)
            positions = [columns[name] for name in RSNA_COLUMNS]
            index = len(self.sheet_names) - 1
            for row_number, values in enumerate(rows, start=number + 1):
                picked = tuple(values[p] if p < len(values) else None for p in positions)
                if any(cell_text(v) for v in picked):
                    yield _Cells(index, row_number, picked)
        if first is None:
            if best is None:
                raise RsnaImportError(
                    "no sheet has the columns of the RSNA Anonymizer's index ("
                    + ", ".join(RSNA_COLUMNS) + ") in its first "
                    f"{HEADER_SEARCH_ROWS} rows")
            found = _header_columns(next(workbook[best[1]].iter_rows(
                min_row=best[2], max_row=best[2], values_only=True)))
            missing = [name for name in RSNA_COLUMNS if name not in found]
            raise RsnaImportError(
                f"sheet {best[1]!r} row {best[2]} has the RSNA Anonymizer's columns but "
                f"not {', '.join(missing)}")


# ---------------------------------------------------------------------------------------
# Values as Excel may have left them
# ---------------------------------------------------------------------------------------


def _text(value: object) -> str:
    return unprotect(cell_text(value))


def _date(value: object) -> date | None:
    """A study date from a cell: text YYYYMMDD (or with - . / between), a date or
    date-time cell, the number 20170601, or an Excel date serial. None if empty; raises
    ValueError when it is no date."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, bool):
        raise ValueError("not a date")
    if isinstance(value, (int, float)):
        whole = int(value)
        if 10_000_000 <= whole <= 99_991_231:
            return _date(str(whole))
        if 1 <= whole <= _LAST_EXCEL_SERIAL:
            return _EXCEL_EPOCH + timedelta(days=whole)
        raise ValueError("not a date")
    text = _text(value)
    if not text:
        return None
    match = _DATE.match(text)
    if match:
        return date(int(match[1]), int(match[2]), int(match[3]))
    if text.isdigit() and len(text) <= 7:
        return _date(int(text))
    raise ValueError("not a date")


def _offset(value: object) -> int:
    """DateOffset from a cell: a whole number, or text of one. Raises ValueError."""
    if isinstance(value, bool) or value is None:
        raise ValueError("empty")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a whole number")
        return int(value)
    text = _text(value).replace("\u2212", "-").replace(" ", "")
    if not text:
        raise ValueError("empty")
    if not _INTEGER.match(text):
        raise ValueError("not a whole number")
    return int(float(text)) if "." in text else int(text)


# ---------------------------------------------------------------------------------------
# Rows checked one by one
# ---------------------------------------------------------------------------------------

_STAGE_COLUMNS = (
    "sheet", "row_number", "pseudo_patient_name", "pseudo_patient_id", "number",
    "original_patient_name", "original_patient_id", "original_issuer", "counter_key",
    "raw_offset", "pseudo_study_date", "original_study_date", "pseudo_accession",
    "original_accession", "pseudo_study_uid", "original_study_uid",
)
_STAGE_TABLE = (
    "CREATE TEMPORARY TABLE rsna_row (sheet integer NOT NULL, row_number integer NOT NULL,"
    " pseudo_patient_name text NOT NULL, pseudo_patient_id text NOT NULL,"
    " number bigint NOT NULL, original_patient_name text NOT NULL,"
    " original_patient_id text NOT NULL, original_issuer text NOT NULL,"
    " counter_key text NOT NULL, raw_offset integer NOT NULL,"
    " pseudo_study_date text NOT NULL, original_study_date text NOT NULL,"
    " pseudo_accession text NOT NULL, original_accession text NOT NULL,"
    " pseudo_study_uid text NOT NULL, original_study_uid text NOT NULL) ON COMMIT DROP"
)


class _Problems:
    """Problems found so far, the first few worded, all counted."""

    def __init__(self, where: _Where) -> None:
        self.where = where
        self.listed: list[str] = []
        self.count = 0

    def add(self, sheet: int, row: int, reason: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED:
            self.listed.append(f"{self.where(sheet, row)}: {reason}")

    def add_found(
        self, found: list[asyncpg.Record], total: int, reasons: str | list[str]
    ) -> None:
        """The rows a check found (the first of them) with the reason, or each row's, and
        how many it found in all; a ``{first}`` in a reason names the earlier row that a
        row contradicts."""
        for position, row in enumerate(found):
            text = reasons if isinstance(reasons, str) else reasons[position]
            if "{first}" in text:
                text = text.format(first=self.where(row["first_sheet"], row["first_row"]))
            self.add(row["sheet"], row["row_number"], text)
        self.count += total - len(found)

    def lines(self) -> list[str]:
        more = self.count - len(self.listed)
        return self.listed + ([f"... and {more} more"] if more > 0 else [])

    def text(self) -> str:
        return "\n".join(self.lines())


class _Where:
    """Row references as an operator finds them: 'row 12', or with the sheet's name when
    the rows span several sheets."""

    def __init__(self, sheet_names: list[str]) -> None:
        self.sheet_names = sheet_names

    def __call__(self, sheet: int, row: int) -> str:
        if len(self.sheet_names) > 1:
            return f"sheet {self.sheet_names[sheet]!r} row {row}"
        return f"row {row}"


@dataclass
class _Reading:
    """What reading the rows found besides the rows: the SITEID (and the row that set it)
    and the evidence of DateOffset's sign."""

    site_id: str = ""
    site_row: tuple[int, int] = (0, 0)
    rows: int = 0
    into_past: _Rows = field(default_factory=lambda: _Rows())
    forward: _Rows = field(default_factory=lambda: _Rows())
    other_dated: int = 0


@dataclass
class _Rows:
    """Rows of one kind: how many, and the first few (to name them)."""

    count: int = 0
    first: list[tuple[int, int]] = field(default_factory=list)

    def add(self, sheet: int, row: int) -> None:
        self.count += 1
        if len(self.first) < MAX_LISTED:
            self.first.append((sheet, row))


def _staged(cells: _Cells, reading: _Reading, problems: _Problems) -> tuple[object, ...] | None:
    """One row as staged, or None (and its problems noted)."""
    (anon_name, anon_id, phi_name, phi_id, offset_cell, anon_date_cell, phi_date_cell,
     anon_accession, phi_accession, anon_uid, phi_uid) = cells.values
    sheet, row = cells.sheet, cells.row
    before = problems.count
    pseudo_id = _text(anon_id)
    match = _PSEUDO_ID.match(pseudo_id)
    if match is None:
        problems.add(sheet, row, "ANON-PatientID is not SITEID-NNNNNN (six digits, a dash, "
                     "the patient's number)")
    elif not reading.site_id:
        reading.site_id, reading.site_row = match[1], (sheet, row)
    elif match[1] != reading.site_id:
        problems.add(sheet, row, f"ANON-PatientID has the SITEID {match[1]}, not "
                     f"{reading.site_id} as {problems.where(*reading.site_row)}")
    original_uid, pseudo_uid = _text(phi_uid), _text(anon_uid)
    original_id = _text(phi_id)
    if bool(original_uid) != bool(pseudo_uid):
        empty = "ANON-StudyInstanceUID" if original_uid else "PHI-StudyInstanceUID"
        problems.add(sheet, row, f"{empty} is empty but the other study UID is not")
    if not original_id and not original_uid:
        problems.add(sheet, row, "PHI-PatientID and PHI-StudyInstanceUID are both empty "
                     "(a workbook saved without PHI cannot be imported)")
    try:
        raw_offset = _offset(offset_cell)
    except ValueError as exc:
        problems.add(sheet, row, f"DateOffset is {exc}")
        raw_offset = 0
    if abs(raw_offset) > MAX_OFFSET_DAYS:
        problems.add(sheet, row, f"DateOffset is more than {MAX_OFFSET_DAYS} days")
    dates: list[date | None] = []
    for name, value in (("ANON-StudyDate", anon_date_cell), ("PHI-StudyDate", phi_date_cell)):
        try:
            dates.append(_date(value))
        except ValueError:
            problems.add(sheet, row, f"{name} is not a date")
            dates.append(None)
    if problems.count > before:
        return None
    assert match is not None
    pseudo_date, original_date = dates
    if pseudo_date is not None and original_date is not None:
        into_past = (original_date - pseudo_date).days
        if into_past == raw_offset and raw_offset:
            reading.into_past.add(sheet, row)
        elif into_past == -raw_offset and raw_offset:
            reading.forward.add(sheet, row)
        elif into_past != raw_offset:
            reading.other_dated += 1
    key = patient_key(original_id, "", original_uid)
    return (
        sheet, row, _text(anon_name) or pseudo_id, pseudo_id, int(match[2]),
        _text(phi_name), key[0], key[1], patient_counter_key(key), raw_offset,
        f"{pseudo_date:%Y%m%d}" if pseudo_date else "",
        f"{original_date:%Y%m%d}" if original_date else "",
        _text(anon_accession), _text(phi_accession), pseudo_uid, original_uid,
    )


def _rows_of(rows: _Rows, where: _Where) -> str:
    shown = ", ".join(where(*ref) for ref in rows.first)
    more = rows.count - len(rows.first)
    return shown + (f" and {more} more" if more > 0 else "")


# ---------------------------------------------------------------------------------------
# Checks and merge in SQL
# ---------------------------------------------------------------------------------------

# The first row of each patient and of each study, as the index will hold them.
_FIRST_PATIENTS = (
    "CREATE TEMPORARY TABLE rsna_patient ON COMMIT DROP AS"
    " SELECT DISTINCT ON (original_patient_id, original_issuer) * FROM rsna_row"
    " ORDER BY original_patient_id, original_issuer, sheet, row_number"
)
_FIRST_STUDIES = (
    "CREATE TEMPORARY TABLE rsna_study ON COMMIT DROP AS"
    " SELECT DISTINCT ON (original_study_uid) * FROM rsna_row WHERE original_study_uid <> ''"
    " ORDER BY original_study_uid, sheet, row_number"
)
# Rows that contradict an earlier row: (query, reason). Each query returns the row and
# the earlier row (first_sheet, first_row) it contradicts.
_CONTRADICTIONS = (
    ("SELECT r.sheet, r.row_number, f.sheet AS first_sheet, f.row_number AS first_row"
     " FROM rsna_row r JOIN rsna_patient f USING (original_patient_id, original_issuer)"
     " WHERE (r.pseudo_patient_id, r.pseudo_patient_name, r.raw_offset)"
     " IS DISTINCT FROM (f.pseudo_patient_id, f.pseudo_patient_name, f.raw_offset)",
     "PHI-PatientID is the one of {first} with another ANON-PatientID, ANON-PatientName "
     "or DateOffset"),
    ("SELECT r.sheet, r.row_number, f.sheet AS first_sheet, f.row_number AS first_row"
     " FROM rsna_patient r JOIN (SELECT DISTINCT ON (number) * FROM rsna_patient"
     " ORDER BY number, sheet, row_number) f USING (number)"
     " WHERE (r.original_patient_id, r.original_issuer)"
     " IS DISTINCT FROM (f.original_patient_id, f.original_issuer)",
     "ANON-PatientID has the number of {first}, which is another PHI-PatientID"),
    ("SELECT r.sheet, r.row_number, f.sheet AS first_sheet, f.row_number AS first_row"
     " FROM rsna_row r JOIN rsna_study f USING (original_study_uid)"
     " WHERE (r.pseudo_study_uid, r.pseudo_accession, r.original_accession,"
     " r.original_patient_id, r.original_issuer) IS DISTINCT FROM (f.pseudo_study_uid,"
     " f.pseudo_accession, f.original_accession, f.original_patient_id, f.original_issuer)",
     "PHI-StudyInstanceUID is the one of {first} with other values"),
    ("SELECT r.sheet, r.row_number, f.sheet AS first_sheet, f.row_number AS first_row"
     " FROM rsna_study r JOIN (SELECT DISTINCT ON (pseudo_study_uid) * FROM rsna_study"
     " ORDER BY pseudo_study_uid, sheet, row_number) f USING (pseudo_study_uid)"
     " WHERE r.original_study_uid <> f.original_study_uid",
     "ANON-StudyInstanceUID is the one of {first}, which is another study"),
)

# The workbook's patients the index holds, and whether with the same pseudonyms ($1: the
# sign that makes DateOffset days into the past).
_PRESENT_PATIENTS = (
    "SELECT n.sheet, n.row_number, (p.pseudo_patient_id, p.pseudo_patient_name,"
    " p.date_offset_days) = (n.pseudo_patient_id, n.pseudo_patient_name, n.raw_offset * $1)"
    " AS same FROM rsna_patient n JOIN patient p USING (original_patient_id, original_issuer)"
)
_PRESENT_STUDIES = (
    "SELECT n.sheet, n.row_number, (s.pseudo_study_uid, s.pseudo_accession)"
    " = (n.pseudo_study_uid, n.pseudo_accession) AND p.original_patient_id"
    " IS NOT DISTINCT FROM n.original_patient_id AND p.original_issuer"
    " IS NOT DISTINCT FROM n.original_issuer AS same"
    " FROM rsna_study n JOIN study s USING (original_study_uid)"
    " LEFT JOIN patient p ON p.id = s.patient"
)
# Conflicts with the index: (query, reason, takes the sign).
_PATIENT_CONFLICTS = (
    (f"SELECT sheet, row_number FROM ({_PRESENT_PATIENTS}) AS present WHERE NOT same",
     "the index holds this patient (PHI-PatientID) with another pseudonymous ID, name or "
     "date offset", True),
    ("SELECT n.sheet, n.row_number FROM rsna_patient n JOIN patient p"
     " ON p.pseudo_patient_id = n.pseudo_patient_id"
     " WHERE (p.original_patient_id, p.original_issuer)"
     " IS DISTINCT FROM (n.original_patient_id, n.original_issuer)",
     "the index gives this ANON-PatientID to another patient", False),
    (f"SELECT DISTINCT n.sheet, n.row_number FROM rsna_patient n JOIN integer_value v"
     f" ON v.key_type = '{PATIENT_KEY_TYPE}'"
     " AND (v.key_value = n.counter_key OR v.value = n.number)"
     " WHERE (v.key_value = n.counter_key) IS DISTINCT FROM (v.value = n.number)",
     "the index's patient counter gives this patient, or ANON-PatientID's number, "
     "another number or patient", False),
)
_STUDY_CONFLICTS = (
    (f"SELECT sheet, row_number FROM ({_PRESENT_STUDIES}) AS present WHERE NOT same",
     "the index holds this study (PHI-StudyInstanceUID) with another pseudonymous UID, "
     "accession number or patient", False),
    ("SELECT n.sheet, n.row_number FROM rsna_study n JOIN study s"
     " ON s.pseudo_study_uid = n.pseudo_study_uid"
     " WHERE s.original_study_uid <> n.original_study_uid",
     "the index gives this ANON-StudyInstanceUID to another study", False),
)

_INSERT_PATIENTS = (
    "INSERT INTO patient (original_patient_id, original_issuer, original_patient_name,"
    " pseudo_patient_id, pseudo_patient_name, date_offset_days, imported)"
    " SELECT original_patient_id, original_issuer, original_patient_name, pseudo_patient_id,"
    " pseudo_patient_name, raw_offset * $1, true FROM rsna_patient n WHERE NOT EXISTS"
    " (SELECT 1 FROM patient p WHERE (p.original_patient_id, p.original_issuer)"
    " = (n.original_patient_id, n.original_issuer))"
)
_INSERT_NUMBERS = (
    "INSERT INTO integer_value (key_type, key_value, value)"
    " SELECT $1, counter_key, number FROM rsna_patient ON CONFLICT DO NOTHING"
)
_ADVANCE_COUNTER = (
    "UPDATE integer_key_type SET last_value = greatest(last_value,"
    " (SELECT coalesce(max(number), 0) FROM rsna_patient)) WHERE key_type = $1"
    " RETURNING last_value"
)
_INSERT_STUDIES = (
    "INSERT INTO study (patient, original_study_uid, pseudo_study_uid, original_study_date,"
    " pseudo_study_date, original_accession, pseudo_accession, imported)"
    " SELECT p.id, n.original_study_uid, n.pseudo_study_uid, n.original_study_date,"
    " n.pseudo_study_date, n.original_accession, n.pseudo_accession, true"
    " FROM rsna_study n JOIN patient p USING (original_patient_id, original_issuer)"
    " WHERE NOT EXISTS (SELECT 1 FROM study s WHERE s.original_study_uid"
    " = n.original_study_uid)"
)


async def _site(
    connection: asyncpg.Connection, site_id: str, configured: str | None,
    summary: ImportSummary,
) -> None:
    """Check the workbook's SITEID against the index's site (and ``SITE_ID``); create the
    site with it when the index has none."""
    if configured is not None and configured != site_id:
        raise RsnaImportError(
            f"the workbook's SITEID is {site_id} but SITE_ID is {configured}: import it into "
            "an index of that site, or leave SITE_ID unset for a new index")
    row = await connection.fetchrow("SELECT site_id FROM site FOR UPDATE")
    if row is None:
        import secrets

        await connection.execute(
            "INSERT INTO site (site_id, secret) VALUES ($1, $2)"
            " ON CONFLICT (singleton) DO NOTHING",
            site_id, secrets.token_bytes(32),
        )
        row = await connection.fetchrow("SELECT site_id FROM site FOR UPDATE")
        summary.site_created = True
    assert row is not None
    if row["site_id"] != site_id:
        raise RsnaImportError(
            f"the workbook's SITEID is {site_id} but this index is of site {row['site_id']}, "
            "and a site's SITEID never changes: import it into a new index of its own")


async def _refs(
    connection: asyncpg.Connection, query: str, *args: object
) -> tuple[list[asyncpg.Record], int]:
    """The first rows a check finds, in workbook order, and how many it finds."""
    found = await connection.fetch(
        f"SELECT *, count(*) OVER () AS total FROM ({query}) AS found"
        f" ORDER BY 1, 2, 3 LIMIT {MAX_LISTED}", *args)
    return list(found), found[0]["total"] if found else 0


async def _count(connection: asyncpg.Connection, query: str, *args: object) -> int:
    return int(await connection.fetchval(
        f"SELECT count(*) FROM ({query}) AS found WHERE same", *args))


async def _conflicts(
    connection: asyncpg.Connection, checks: tuple[tuple[str, str, bool], ...],
    conflicts: _Problems, *args: object,
) -> int:
    """Note the conflicts ``checks`` find (a row may have several reasons) and return how
    many rows have any."""
    union = " UNION ALL ".join(
        f"SELECT sheet, row_number, {n} AS reason FROM ({query}) AS check_{n}"
        for n, (query, _, _) in enumerate(checks))
    rows = await connection.fetchval(
        f"SELECT count(DISTINCT (sheet, row_number)) FROM ({union}) AS found", *args)
    found, total = await _refs(connection, union, *args)
    conflicts.add_found(found, total, [checks[row["reason"]][1] for row in found])
    return int(rows)


async def _check_rows(connection: asyncpg.Connection, where: _Where) -> None:
    problems = _Problems(where)
    for query, reason in _CONTRADICTIONS:
        found, total = await _refs(connection, query)
        problems.add_found(found, total, reason)
    if problems.count:
        raise RsnaImportError("rows of the workbook contradict each other:\n" + problems.text())


async def _merge(
    connection: asyncpg.Connection, sign: int, where: _Where, summary: ImportSummary
) -> None:
    summary.patients = int(await connection.fetchval("SELECT count(*) FROM rsna_patient"))
    summary.studies = int(await connection.fetchval("SELECT count(*) FROM rsna_study"))
    summary.patients_present = await _count(connection, _PRESENT_PATIENTS, sign)
    summary.studies_present = await _count(connection, _PRESENT_STUDIES)
    conflicts = _Problems(where)
    summary.patient_conflicts = await _conflicts(connection, _PATIENT_CONFLICTS, conflicts,
                                                 sign)
    summary.study_conflicts = await _conflicts(connection, _STUDY_CONFLICTS, conflicts)
    summary.conflicts = conflicts.lines()
    if conflicts.count:
        return
    inserted = await connection.execute(_INSERT_PATIENTS, sign)
    summary.patients_imported = int(inserted.split()[-1])
    await connection.execute(_INSERT_NUMBERS, PATIENT_KEY_TYPE)
    last = await connection.fetchval(_ADVANCE_COUNTER, PATIENT_KEY_TYPE)
    summary.next_patient = f"{summary.site_id}-{int(last) + 1:06d}"
    inserted = await connection.execute(_INSERT_STUDIES)
    summary.studies_imported = int(inserted.split()[-1])


async def _stage(
    connection: asyncpg.Connection, workbook: _Workbook, reading: _Reading, where: _Where,
) -> None:
    problems = _Problems(where)
    batch: list[tuple[object, ...]] = []
    for cells in workbook.rows():
        reading.rows += 1
        staged = _staged(cells, reading, problems)
        if staged is not None and not problems.count:
            batch.append(staged)
        if len(batch) >= STAGE_ROWS:
            await connection.copy_records_to_table("rsna_row", records=batch,
                                                   columns=_STAGE_COLUMNS)
            batch = []
    if problems.count:
        raise RsnaImportError("the workbook cannot be imported:\n" + problems.text())
    if batch:
        await connection.copy_records_to_table("rsna_row", records=batch,
                                               columns=_STAGE_COLUMNS)
    if not reading.rows:
        raise RsnaImportError("the workbook has the RSNA Anonymizer's columns but no rows")


def _convention(reading: _Reading, where: _Where, summary: ImportSummary) -> int:
    """The sign that turns DateOffset into days into the past, from the rows' dates."""
    into_past, forward = reading.into_past, reading.forward
    if into_past.count and forward.count:
        fewer, more = sorted((into_past, forward), key=lambda rows: rows.count)
        raise RsnaImportError(
            "the study dates of some rows differ by DateOffset one way and of others the "
            f"other way: {_rows_of(fewer, where)} against {more.count} rows such as "
            f"{where(*more.first[0])}")
    summary.other_dated_rows = reading.other_dated
    if into_past.count:
        summary.convention = "ANON-StudyDate = PHI-StudyDate - DateOffset"
        summary.convention_rows = into_past.count
        return 1
    summary.convention = "ANON-StudyDate = PHI-StudyDate + DateOffset"
    summary.convention_rows = forward.count
    return -1


async def import_rsna(
    pool: asyncpg.Pool,
    path: Path,
    dry_run: bool = False,
    configured_site_id: str | None = None,
) -> ImportSummary:
    """Import the RSNA Anonymizer's index workbook at ``path`` into the PHI index, in one
    transaction (rolled back when ``dry_run``, or when any row conflicts with the index).
    Raises :class:`RsnaImportError` for a workbook that cannot be imported (it names rows
    and columns, never values) and ``OSError`` for a file that cannot be read."""
    workbook = _Workbook(path)
    summary = ImportSummary(dry_run=dry_run, sheets=workbook.sheet_names)
    where = _Where(workbook.sheet_names)
    reading = _Reading()
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            # Numbering stops while the import runs: no patient gets a number meanwhile.
            await connection.execute(
                "INSERT INTO integer_key_type (key_type) VALUES ($1) ON CONFLICT DO NOTHING",
                PATIENT_KEY_TYPE)
            await connection.execute(
                "SELECT last_value FROM integer_key_type WHERE key_type = $1 FOR UPDATE",
                PATIENT_KEY_TYPE)
            await connection.execute(_STAGE_TABLE)
            await _stage(connection, workbook, reading, where)
            summary.rows = reading.rows
            summary.site_id = reading.site_id
            sign = _convention(reading, where, summary)
            await _site(connection, reading.site_id, configured_site_id, summary)
            await connection.execute(_FIRST_PATIENTS)
            await connection.execute(_FIRST_STUDIES)
            await _check_rows(connection, where)
            await _merge(connection, sign, where, summary)
        except BaseException:
            await transaction.rollback()
            raise
        if summary.imported:
            await transaction.commit()
        else:
            await transaction.rollback()
    return summary
