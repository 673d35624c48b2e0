"""The PHI index as the RSNA Anonymizer's workbook: its columns, what it holds with and
without PHI, text kept text, sheets continued past a sheet's size, and an event loop that
stays free while it is written."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import openpyxl
import pytest

from shared.index.connect import open_index
from shared.index.phi_index import InstanceRecord
from shared.index.workbook import COLUMNS, index_workbook, study_rows, write_workbook

pytestmark = pytest.mark.integration

EXPORTED = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)


async def _fill(url: str) -> None:
    """Two patients: one with two studies (one de-identified: 2 series, 3 instances) and
    values that start like formulas, exported; one without a study yet."""
    opened = await open_index(None, url, "654321")
    try:
        first = await opened.index.patient(("=HYPERLINK(\"x\")", ""), "+Doe^Jane")
        await opened.index.study(first, "1.2.3.1", "2.25.1", "20200102", "20191201", "-77")
        await opened.index.study(first, "1.2.3.2", "2.25.2", "20210102", "20201201", "")
        await opened.index.record_instances([
            InstanceRecord("1.2.3.1", f"1.2.3.1.{n}", f"2.25.1.{n}", f"1.2.3.1.s{n % 2}",
                           f"2.25.1.s{n % 2}", first.pseudo_patient_id, "1.2.840.10008.5.1.4.1.1.2",
                           "CT", 100, "profile", "0" * 64)
            for n in range(3)])
        await opened.index.patient(("PID-2", ""), "Roe^Richard")
        async with opened.pool.acquire() as connection:
            await connection.execute("UPDATE patient SET exported_at = $1 WHERE id ="
                                     " (SELECT min(id) FROM patient)", EXPORTED)
    finally:
        await opened.close()


def _sheets(data: bytes) -> dict[str, list[list[openpyxl.cell.cell.Cell]]]:
    workbook = openpyxl.load_workbook(io.BytesIO(data))
    return {sheet.title: [list(row) for row in sheet.iter_rows()]
            for sheet in workbook.worksheets}


def _written(url: str, include_phi: bool) -> tuple[int, bytes]:
    async def run() -> tuple[int, bytes]:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            out = io.BytesIO()
            count = await index_workbook(pool, include_phi, out)
            return count, out.getvalue()
        finally:
            await pool.close()

    return asyncio.run(run())


def test_the_workbook_holds_every_study_and_the_phi_only_when_asked(database_url: str) -> None:
    asyncio.run(_fill(database_url))
    count, data = _written(database_url, include_phi=True)
    assert count == 3
    [(title, rows)] = _sheets(data).items()
    assert title == "Index"
    values = [[cell.value for cell in row] for row in rows]
    assert values[0] == list(COLUMNS)
    offset = values[1][4]
    assert isinstance(offset, int) and -3650 <= offset <= -1  # ANON = PHI + DateOffset
    assert values[1:] == [
        ["654321-000001", "654321-000001", "+Doe^Jane", '=HYPERLINK("x")', offset,
         "20191201", "20200102", values[1][7], "-77", "2.25.1", "1.2.3.1", 2, 3,
         EXPORTED.isoformat()],
        ["654321-000001", "654321-000001", "+Doe^Jane", '=HYPERLINK("x")', offset,
         "20201201", "20210102", None, None, "2.25.2", "1.2.3.2", 0, 0, EXPORTED.isoformat()],
        ["654321-000002", "654321-000002", "Roe^Richard", "PID-2", values[3][4],
         None, None, None, None, None, None, 0, 0, None],
    ]
    # Text that starts like a formula stays text, behind the quote prefix.
    for cell in (rows[1][2], rows[1][3], rows[1][8]):
        assert cell.data_type == "s" and cell.quotePrefix
    assert not rows[1][0].quotePrefix

    count, data = _written(database_url, include_phi=False)
    assert count == 3
    bare = [[cell.value for cell in row] for row in _sheets(data)["Index"]]
    assert bare[0] == list(COLUMNS)
    for row, full in zip(bare[1:], values[1:], strict=True):
        assert [row[i] for i in (2, 3, 4, 6, 8, 10)] == [None] * 6
        assert [row[i] for i in (0, 1, 5, 7, 9, 11, 12, 13)] == [
            full[i] for i in (0, 1, 5, 7, 9, 11, 12, 13)]
    assert b"HYPERLINK" not in data and b"Jane" not in data


def test_rows_past_a_sheets_size_go_on_in_the_next_sheet(tmp_path: Path) -> None:
    from shared.index.workbook import StudyRow

    rows = [StudyRow(f"1-{n}", f"1-{n}", "", "", f"2.25.{n}", 0, 0, None) for n in range(5)]
    path = tmp_path / "index.xlsx"
    assert write_workbook(rows, path, include_phi=False, max_sheet_rows=3) == 5
    sheets = _sheets(path.read_bytes())
    assert list(sheets) == ["Index", "Index (2)", "Index (3)"]
    assert [len(s) for s in sheets.values()] == [3, 3, 2]
    assert all(s[0][0].value == "ANON-PatientName" for s in sheets.values())
    assert [r[9].value for s in sheets.values() for r in s[1:]] == [
        f"2.25.{n}" for n in range(5)]
    empty = tmp_path / "empty.xlsx"
    assert write_workbook([], empty, include_phi=True) == 0
    assert [[c.value for c in r] for r in _sheets(empty.read_bytes())["Index"]] == [
        list(COLUMNS)]


def test_the_event_loop_stays_free_while_a_large_workbook_is_written(
    database_url: str,
) -> None:
    count = 20_000

    async def run() -> tuple[int, float, float, int]:
        opened = await open_index(None, database_url, "654321")
        try:
            async with opened.pool.acquire() as connection:
                await connection.execute(
                    "INSERT INTO patient (original_patient_id, original_patient_name,"
                    " pseudo_patient_id, pseudo_patient_name, date_offset_days)"
                    " SELECT 'P' || n, 'Name^' || n, '654321-' || lpad(n::text, 6, '0'),"
                    " '654321-' || lpad(n::text, 6, '0'), 1 + n % 3650"
                    " FROM generate_series(1, $1) AS n", count)
                await connection.execute(
                    "INSERT INTO study (patient, original_study_uid, pseudo_study_uid)"
                    " SELECT id, '1.2.3.' || id, '2.25.' || id FROM patient")
            gaps: list[float] = []
            done = asyncio.Event()

            async def tick() -> None:
                last = time.perf_counter()
                while not done.is_set():
                    await asyncio.sleep(0.005)
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now

            ticker = asyncio.create_task(tick())
            started = time.perf_counter()
            written = await index_workbook(opened.pool, True, io.BytesIO())
            took = time.perf_counter() - started
            done.set()
            await ticker
            streamed = len([row async for row in study_rows(opened.pool, False)])
            return written, took, max(gaps), streamed
        finally:
            await opened.close()

    written, took, worst, streamed = asyncio.run(run())
    assert written == streamed == count
    # A blocked loop would wait about as long as the whole write; a free one ticks on.
    assert took > 0.5, "too few rows to tell a blocked loop from a free one"
    # Half the write: a blocked loop waits it all; a busy machine (other processes on
    # the cores, the writing thread holding the interpreter) stretches a free one's gaps.
    assert worst < took / 2, (
        f"the event loop waited {worst:.2f} s of the {took:.2f} s the workbook took")
