"""CSV and Excel tables for query/retrieve: rows of text read from a file, rows written to one.

:func:`read_table` turns a ``.csv`` (UTF-8 with or without a byte order mark, UTF-16 with
one, otherwise latin-1; the delimiter is the one among comma, semicolon and tab that the
first non-empty line uses most) or ``.xlsx`` (the first worksheet) into numbered rows of
stripped text, numbered as a spreadsheet program shows them. :func:`write_table` writes a
header and rows through a temporary file in the same folder and a rename. A text value that
Excel or LibreOffice would take for a formula (it starts with ``=``, ``+``, ``-`` or ``@``)
is written as a text cell in a workbook and behind a single quote in a CSV file; reading
drops such a quote again. Errors are :class:`SpreadsheetError` and never quote cell values.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import openpyxl
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import Cell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

SUFFIXES = (".csv", ".xlsx")
DELIMITERS = (",", ";", "\t")
FORMULA_STARTS = ("=", "+", "-", "@")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# A cell as written: text, or a whole number (None leaves the cell empty).
Value = str | int | None


class SpreadsheetError(ValueError):
    """A file that cannot be read as a table; the message says what to do instead."""


def check_suffix(path: Path, what: str) -> str:
    """The lower-case suffix of ``path``, which must be ``.csv`` or ``.xlsx``."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        hint = " (save an .xls workbook again as .xlsx)" if suffix == ".xls" else ""
        raise SpreadsheetError(f"{what} must be .csv or .xlsx{hint}")
    return suffix


def decode_text(raw: bytes) -> str:
    """Text from bytes: UTF-16 when a UTF-16 byte order mark says so, else UTF-8 (a byte order
    mark dropped), else latin-1, which decodes anything."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def cell_text(value: object) -> str:
    """A cell's value as text: whole numbers without ``.0``, dates as YYYYMMDD, stripped."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, date):  # a datetime is a date too
        return f"{value.year:04d}{value.month:02d}{value.day:02d}"
    return str(value).strip()


def unprotect(text: str) -> str:
    """``text`` without the single quote that protects a value starting like a formula."""
    if len(text) > 1 and text[0] == "'" and text[1] in FORMULA_STARTS:
        return text[1:]
    return text


def read_table(path: Path) -> list[tuple[int, list[str]]]:
    """The rows of a ``.csv`` or ``.xlsx`` file that hold any text, each with its row number
    as a spreadsheet program shows it (the first row is 1) and its cells as stripped text.
    A file that is not a table raises :class:`SpreadsheetError`; a file that cannot be
    opened raises the ``OSError``."""
    suffix = check_suffix(path, "the batch file")
    rows = _read_csv(path) if suffix == ".csv" else _read_xlsx(path)
    table: list[tuple[int, list[str]]] = []
    for number, values in rows:
        cells = [unprotect(cell_text(value)) for value in values]
        if any(cells):
            table.append((number, cells))
    return table


def _read_csv(path: Path) -> list[tuple[int, Sequence[object]]]:
    raw = path.read_bytes()
    if raw.startswith(b"PK\x03\x04"):
        raise SpreadsheetError("the .csv file is a zip archive, probably an Excel workbook: "
                               "name it .xlsx or save it again as CSV")
    text = decode_text(raw)
    if "\x00" in text:
        raise SpreadsheetError("the .csv file holds binary data, not text: save the table "
                               "again as CSV")
    lines = list(io.StringIO(text, newline=""))
    first = next((line for line in lines if line.strip()), "")
    counts = [first.count(delimiter) for delimiter in DELIMITERS]
    delimiter = DELIMITERS[counts.index(max(counts))] if max(counts) else ","
    # A record is one row however many lines a quoted value spans, as a spreadsheet shows it.
    try:
        return list(enumerate(csv.reader(lines, delimiter=delimiter), start=1))
    except csv.Error:
        raise SpreadsheetError("the .csv file cannot be read as CSV (a quote is not closed "
                               "or a value is too long): save the table again as CSV") from None


def _read_xlsx(path: Path) -> list[tuple[int, Sequence[object]]]:
    # openpyxl warns about workbook features it does not read (data validation, styles):
    # nothing the rows depend on, and no business of the person running the command.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _xlsx_rows(path)


def _xlsx_rows(path: Path) -> list[tuple[int, Sequence[object]]]:
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except OSError:
        raise
    except Exception:
        raise _not_a_workbook() from None
    try:
        if not workbook.worksheets:
            raise SpreadsheetError("the .xlsx workbook has no worksheet")
        sheet = workbook.worksheets[0]
        # Rows are read to the end whatever size the file claims its sheet has.
        reset = getattr(sheet, "reset_dimensions", None)
        if reset is not None:
            reset()
        return list(enumerate(sheet.iter_rows(min_row=1, values_only=True), start=1))
    except (SpreadsheetError, OSError):
        raise
    except Exception:
        raise _not_a_workbook() from None
    finally:
        workbook.close()


def _not_a_workbook() -> SpreadsheetError:
    return SpreadsheetError("the .xlsx file is not an Excel workbook that can be read (it may "
                            "be damaged, password-protected or an .xls file renamed): open it "
                            "and save it again as .xlsx")


def write_table(path: Path, header: Sequence[str], rows: Sequence[Sequence[Value]]) -> None:
    """Write ``header`` and ``rows`` to ``path`` (``.xlsx`` or ``.csv`` by its suffix) through
    a temporary file in the same folder, renamed over ``path`` once complete; the file is
    readable by its owner only. Control characters in values become spaces, and a value that
    starts like a formula is kept as text (a text cell, or a leading ``'`` in CSV)."""
    suffix = check_suffix(path, "the results file")
    clean = [[_clean(value) for value in row] for row in rows]
    writer = _write_xlsx if suffix == ".xlsx" else _write_csv
    _replace(path, lambda temporary: writer(temporary, list(header), clean))


def _clean(value: Value) -> Value:
    return CONTROL.sub(" ", value) if isinstance(value, str) else value


def _write_csv(path: Path, header: list[str], rows: list[list[Value]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([_csv_value(value) for value in row] for row in rows)


def _csv_value(value: Value) -> str | int:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _write_xlsx(path: Path, header: list[str], rows: list[list[Value]]) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.worksheets[0]
    sheet.title = "Results"
    bold = Font(bold=True)
    for column, name in enumerate(header, start=1):
        sheet.cell(row=1, column=column, value=name).font = bold
    for number, row in enumerate(rows, start=2):
        for column, value in enumerate(row, start=1):
            if value is None or value == "":
                continue
            cell = sheet.cell(row=number, column=column, value=value)
            if isinstance(value, str):
                keep_as_text(cell)
    for column, name in enumerate(header, start=1):
        width = max([len(name), *(len(str(row[column - 1] or "")) for row in rows)])
        sheet.column_dimensions[get_column_letter(column)].width = min(width + 2, 70)
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(header))}{len(rows) + 1}"
    workbook.save(path)


def keep_as_text(cell: Cell) -> None:
    """Keep a text cell's value text: openpyxl takes "=..." for a formula and "#N/A" for an
    error, and a spreadsheet program takes a value starting with ``+``, ``-`` or ``@`` for a
    formula once it is edited, unless the cell carries the quote prefix."""
    cell.data_type = "s"
    if isinstance(cell.value, str) and cell.value.startswith(FORMULA_STARTS):
        cell.quotePrefix = True


def write_only_text(sheet: WriteOnlyWorksheet, value: str) -> str | Cell:
    """A text value to append to a row of a write-only worksheet: control characters become
    spaces, and a value that would not stay text on its own (see :func:`keep_as_text`)
    becomes a cell that does; other text goes as it is (a cell object costs time)."""
    value = CONTROL.sub(" ", value)
    if not value.startswith(FORMULA_STARTS) and not value.startswith("#"):
        return value
    cell = WriteOnlyCell(sheet, value=value)
    keep_as_text(cell)
    return cell


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(name)
    try:
        write(temporary)
        with temporary.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
