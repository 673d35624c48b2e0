"""The PHI index as the RSNA Anonymizer's Excel workbook of its index.

The RSNA Anonymizer saves its whole database from its Index tab as a workbook with one
row per study: the anonymized and original patient name and ID, the patient's date
offset, and the study's anonymized and original date, accession number and UID. Sites
moving from it know that table and keep their records in it, so the index is written the
same way, with three columns after the Anonymizer's: the study's series and instances
de-identified here and when the patient was last exported. A patient without a study yet
has one row with empty study columns. ``anon index import-rsna`` reads such a workbook,
this one included, back into an index.

``DateOffset`` is written as the Anonymizer's table reads: ANON-StudyDate is PHI-StudyDate
plus DateOffset days, so an offset into the past is negative (the index stores it as a
positive number of days into the past). Without PHI every PHI-* cell and DateOffset is
empty: the columns are there, the original values are not even read from the database.

Rows are read through a server-side cursor in one read-only snapshot, and the workbook is
written in openpyxl's write-only mode, so memory stays flat for an index of millions of
studies. A sheet holds at most 1,048,576 rows (Excel's limit), header included; the rows
go on in sheets "Index (2)", "Index (3)", ... each with the header again. Text that a
spreadsheet program would take for a formula is kept text (``shared.qr.spreadsheets``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import asyncpg
import openpyxl
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import Cell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from shared.qr.spreadsheets import write_only_text

RSNA_COLUMNS = (
    "ANON-PatientName", "ANON-PatientID", "PHI-PatientName", "PHI-PatientID", "DateOffset",
    "ANON-StudyDate", "PHI-StudyDate", "ANON-Accession", "PHI-Accession",
    "ANON-StudyInstanceUID", "PHI-StudyInstanceUID",
)
COLUMNS = (*RSNA_COLUMNS, "Series", "Instances", "ExportDate")
SHEET_NAME = "Index"
# Excel's rows per worksheet.
MAX_SHEET_ROWS = 1_048_576
# Rows fetched from the cursor at a time, and handed to the writing thread at a time.
FETCH_ROWS = 2_000
_WIDTHS = (18, 18, 24, 18, 11, 15, 15, 20, 20, 46, 46, 8, 10, 26)


@dataclass(frozen=True, slots=True)
class StudyRow:
    """One study of the index (or a patient without a study: empty study fields). The
    original values are PHI and empty when the rows were read without PHI."""

    pseudo_patient_name: str
    pseudo_patient_id: str
    pseudo_study_date: str
    pseudo_accession: str
    pseudo_study_uid: str
    series: int
    instances: int
    exported_at: datetime | None
    original_patient_name: str = ""
    original_patient_id: str = ""
    date_offset_days: int | None = None  # days into the past, as the index stores it
    original_study_date: str = ""
    original_accession: str = ""
    original_study_uid: str = ""


_PHI_COLUMNS = (
    ", p.original_patient_name, p.original_patient_id, p.date_offset_days,"
    " s.original_study_date, s.original_accession, s.original_study_uid"
)


def _query(include_phi: bool) -> str:
    return (
        "SELECT p.pseudo_patient_name, p.pseudo_patient_id,"
        " coalesce(s.pseudo_study_date, '') AS pseudo_study_date,"
        " coalesce(s.pseudo_accession, '') AS pseudo_accession,"
        " coalesce(s.pseudo_study_uid, '') AS pseudo_study_uid,"
        " coalesce(c.series, 0) AS series, coalesce(c.instances, 0) AS instances,"
        " p.exported_at"
        + (_PHI_COLUMNS if include_phi else "")
        + " FROM patient p LEFT JOIN study s ON s.patient = p.id"
        " LEFT JOIN LATERAL (SELECT count(DISTINCT i.pseudo_series_uid) AS series,"
        " count(*) AS instances FROM instance i WHERE i.study = s.id) c ON true"
        " ORDER BY p.pseudo_patient_id, s.pseudo_study_date, s.pseudo_study_uid"
    )


async def study_rows(pool: asyncpg.Pool, include_phi: bool) -> AsyncGenerator[StudyRow, None]:
    """Every study of the index, one row each, ordered by pseudonymous patient ID, then
    study date and UID; read through a server-side cursor in one read-only snapshot, so
    the index may be as large as it likes. Without ``include_phi`` no original value is
    read. The connection is held until the iteration ends or the iterator is closed."""
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        async for record in connection.cursor(_query(include_phi), prefetch=FETCH_ROWS):
            yield _row(record, include_phi)


def _row(record: asyncpg.Record, include_phi: bool) -> StudyRow:
    row = StudyRow(
        record["pseudo_patient_name"], record["pseudo_patient_id"],
        record["pseudo_study_date"], record["pseudo_accession"], record["pseudo_study_uid"],
        record["series"], record["instances"], record["exported_at"],
    )
    if not include_phi:
        return row
    return replace(
        row,
        original_patient_name=record["original_patient_name"],
        original_patient_id=record["original_patient_id"],
        date_offset_days=record["date_offset_days"],
        # A patient without a study has none of these.
        original_study_date=record["original_study_date"] or "",
        original_accession=record["original_accession"] or "",
        original_study_uid=record["original_study_uid"] or "",
    )


def _text(sheet: WriteOnlyWorksheet, value: str) -> str | Cell | None:
    return write_only_text(sheet, value) if value else None


def _cells(sheet: WriteOnlyWorksheet, row: StudyRow, include_phi: bool) -> list[object]:
    exported = row.exported_at.isoformat() if row.exported_at is not None else ""
    cells: list[object] = [
        _text(sheet, row.pseudo_patient_name), _text(sheet, row.pseudo_patient_id),
        None, None, None,
        _text(sheet, row.pseudo_study_date), None,
        _text(sheet, row.pseudo_accession), None,
        _text(sheet, row.pseudo_study_uid), None,
        row.series, row.instances, exported or None,
    ]
    if include_phi:
        cells[2] = _text(sheet, row.original_patient_name)
        cells[3] = _text(sheet, row.original_patient_id)
        if row.date_offset_days is not None:
            cells[4] = -row.date_offset_days  # ANON = PHI + DateOffset
        cells[6] = _text(sheet, row.original_study_date)
        cells[8] = _text(sheet, row.original_accession)
        cells[10] = _text(sheet, row.original_study_uid)
    return cells


def write_workbook(
    rows: Iterable[StudyRow],
    out: BinaryIO | Path,
    include_phi: bool,
    max_sheet_rows: int = MAX_SHEET_ROWS,
) -> int:
    """Write ``rows`` as the index workbook to ``out`` (a path or a binary file open for
    writing; a stream that cannot seek will do) and return how many rows were written.
    With ``include_phi`` False the PHI-* and DateOffset cells are empty whatever the rows
    hold. ``max_sheet_rows`` (header included) is Excel's limit unless a test says less."""
    if max_sheet_rows < 2:
        raise ValueError("a sheet holds the header and at least one row")
    workbook = openpyxl.Workbook(write_only=True)
    bold = Font(bold=True)
    sheets = 0
    sheet = None
    in_sheet = max_sheet_rows
    written = 0
    for row in rows:
        if in_sheet >= max_sheet_rows:
            sheets += 1
            sheet = workbook.create_sheet(SHEET_NAME if sheets == 1 else
                                          f"{SHEET_NAME} ({sheets})")
            _start(sheet, bold)
            in_sheet = 1
        assert sheet is not None
        sheet.append(_cells(sheet, row, include_phi))
        in_sheet += 1
        written += 1
    if sheet is None:  # an empty index: the header alone
        _start(workbook.create_sheet(SHEET_NAME), bold)
    workbook.save(out)
    return written


def _start(sheet: WriteOnlyWorksheet, bold: Font) -> None:
    for number, width in enumerate(_WIDTHS, start=1):
        # Write-only sheets have column widths; the type stubs do not say so.
        sheet.column_dimensions[get_column_letter(number)].width = width  # type: ignore[attr-defined]
    header = []
    for name in COLUMNS:
        cell = WriteOnlyCell(sheet, value=name)
        cell.font = bold
        header.append(cell)
    sheet.append(header)
    sheet.freeze_panes = "A2"


class _Stopped(Exception):
    """The writer was abandoned (its caller was cancelled): stop writing."""


async def index_workbook(pool: asyncpg.Pool, include_phi: bool, out: BinaryIO) -> int:
    """Write the index workbook to ``out`` and return the number of rows (studies, and
    patients without a study). The workbook is built in a worker thread, which pulls rows
    from the cursor on this event loop a few thousand at a time: the loop is only ever
    busy fetching, never building cells or compressing, and no more than one batch of rows
    waits in memory. ``out`` is written from that thread."""
    loop = asyncio.get_running_loop()
    rows = study_rows(pool, include_phi)
    lock = asyncio.Lock()
    stopped = False

    async def batch() -> list[StudyRow]:
        async with lock:
            if stopped:
                raise _Stopped
            found: list[StudyRow] = []
            try:
                while len(found) < FETCH_ROWS:
                    found.append(await anext(rows))
            except StopAsyncIteration:
                pass
            return found

    def pulled() -> Iterator[StudyRow]:
        while True:
            found = asyncio.run_coroutine_threadsafe(batch(), loop).result()
            if not found:
                return
            yield from found

    try:
        return await asyncio.to_thread(write_workbook, pulled(), out, include_phi)
    finally:
        async with lock:
            stopped = True
            await rows.aclose()
