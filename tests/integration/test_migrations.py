"""Migrations apply once, in order, and carry data forward."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from shared.index.migrations import migrate, migrations_dir
from shared.index.phi_index import PhiIndex

pytestmark = pytest.mark.integration


def test_migrating_twice_changes_nothing(database_url: str) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        connection = await asyncpg.connect(database_url)
        try:
            return await migrate(connection), await migrate(connection)
        finally:
            await connection.close()

    first, second = asyncio.run(scenario())
    assert first == sorted(p.name for p in migrations_dir().glob("*.sql"))
    assert second == []


def test_patients_numbered_before_the_counters_keep_their_numbers(
    database_url: str, tmp_path: Path
) -> None:
    only_first = tmp_path / "migrations"
    only_first.mkdir()
    shutil.copy(migrations_dir() / "0001_phi_index.sql", only_first)

    async def scenario() -> tuple[str, str, str]:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        assert pool is not None
        try:
            async with pool.acquire() as connection:
                await migrate(connection, only_first)
                await connection.execute(
                    "INSERT INTO site (site_id, secret) VALUES ('111111', $1)", b"k" * 32
                )
                await connection.execute(
                    "INSERT INTO patient (original_patient_id, pseudo_patient_id,"
                    " pseudo_patient_name, date_offset_days)"
                    " VALUES ('OLD-1', '111111-000007', '111111-000007', 5)"
                )
                await migrate(connection)
            index = PhiIndex(pool)
            old = await index.patient(("OLD-1", ""), "")
            new = await index.patient(("NEW-1", ""), "")
            counted = await index.integer("patient", "OLD-1")
            return old.pseudo_patient_id, new.pseudo_patient_id, str(counted)
        finally:
            await pool.close()

    old, new, counted = asyncio.run(scenario())
    assert (old, new, counted) == ("111111-000007", "111111-000008", "7")
