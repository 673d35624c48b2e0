"""``anon rt-batch`` records its tracking rows in the PHI index, and the index gives back a
day's tracking file exactly as the batch wrote it."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.cli.main import main
from shared.index.rt_tracking import TrackingDay, record_tracking, tracking_csv, tracking_dates
from shared.rt.report import TRACKING_HEADER
from tests import synth

pytestmark = pytest.mark.integration


def _write_set(folder: Path, patient_index: int) -> None:
    folder.mkdir(parents=True)
    for n, ds in enumerate(synth.make_rt_set(n_ct=4, n_rois=2, n_beams=1,
                                             patient_index=patient_index).all()):
        synth.write(ds, folder / f"{ds.Modality.lower()}_{n}.dcm")


def _batch(root: Path, data: Path, *extra: str) -> None:
    assert main(["rt-batch", str(root), "--data-dir", str(data), "--no-progress",
                 "--out", str(root.parent / "out"), *extra]) == 0


def _from_index(database_url: str) -> tuple[list[TrackingDay], str, str]:
    async def read() -> tuple[list[TrackingDay], str, str]:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        try:
            return (await tracking_dates(pool), await tracking_csv(pool, date.today()),
                    await tracking_csv(pool, date.today() - timedelta(days=1)))
        finally:
            await pool.close()

    return asyncio.run(read())


def test_a_batch_records_the_rows_of_its_tracking_file(tmp_path: Path, index_env: str) -> None:
    root, data = tmp_path / "plans", tmp_path / "data"
    _write_set(root / "a", 1)
    _write_set(root / "b", 2)
    _batch(root, data, "--hospital", "Example Hospital, Radiotherapy")
    path = tmp_path / "out" / f"tracking_{date.today():%Y%m%d}.csv"
    written = path.read_text(encoding="utf-8")
    assert written.count("\n") == 3 and "ANON001" in written and "ANON002" in written

    days, today, yesterday = _from_index(index_env)
    assert today == written
    assert days == [TrackingDay(date.today(), 2)]
    assert yesterday == ",".join(TRACKING_HEADER) + "\n"

    # A later run of the day replaces the rows of its new IDs and keeps the others, in the
    # file and in the index alike.
    (root / "b").rename(tmp_path / "b-aside")
    _batch(root, data, "--hospital", "Other")
    again = path.read_text(encoding="utf-8")
    assert again != written and "ANON001" in again and "Other" in again
    assert "ANON002" in again  # kept from the first run
    days, today, _ = _from_index(index_env)
    assert today == again
    assert days == [TrackingDay(date.today(), 2)]


def test_rows_of_one_new_id_keep_the_last_and_days_are_kept_apart(database_url: str) -> None:
    async def run() -> tuple[list[TrackingDay], str, str]:
        from shared.index.migrations import migrate

        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as connection:
                await migrate(connection)
            earlier = date(2026, 3, 1)
            await record_tracking(pool, earlier, [["P-1", "NEW002", "PLAN A", "H"],
                                                  ["P-2", "NEW001", "", "H"]])
            await record_tracking(pool, earlier, [["P-3", "NEW002", "PLAN \"B\"", "H"]])
            await record_tracking(pool, date(2026, 3, 2), [["P-4", "NEW001", "", ""]])
            await record_tracking(pool, date(2026, 3, 2), [])
            return (await tracking_dates(pool), await tracking_csv(pool, earlier),
                    await tracking_csv(pool, date(2026, 3, 2)))
        finally:
            await pool.close()

    days, first, second = asyncio.run(run())
    assert days == [TrackingDay(date(2026, 3, 2), 1), TrackingDay(date(2026, 3, 1), 2)]
    header = ",".join(TRACKING_HEADER)
    assert first == f'{header}\nP-2,NEW001,,H\nP-3,NEW002,"PLAN ""B""",H\n'
    assert second == f"{header}\nP-4,NEW001,,\n"
