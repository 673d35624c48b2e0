"""Documents and switches in the index: what is in force (saved, the settings' file, the
built-in profile), replacing and resetting with their history, and the export switch."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.config import Settings, load_settings
from shared.index import configuration as config
from shared.index.connect import open_index

pytestmark = pytest.mark.integration

FILTER_TEXT = '!Modality.equals("SR")'
SCRIPT_TEXT = "set.[0010,0010]PatientName=@remove()\nremove.unspecifiedelements\n"


def _settings(database_url: str, tmp: Path, **extra: Any) -> Settings:
    return load_settings(database_url=database_url, data_dir=tmp / "data", amqp_url=None,
                         s3_endpoint=None, **extra)


def _run(database_url: str, scenario: Callable[[asyncpg.Pool], Awaitable[None]]) -> None:
    async def main() -> None:
        opened = await open_index(None, database_url, max_connections=3)
        try:
            await scenario(opened.pool)
        finally:
            await opened.close()

    asyncio.run(main())


def test_the_settings_choice_is_in_force_until_a_document_is_saved(
    database_url: str, tmp_path: Path
) -> None:
    script_file = tmp_path / "site.script"
    script_file.write_text(SCRIPT_TEXT, encoding="utf-8")
    built_in = _settings(database_url, tmp_path, profile_options="retain_uids",
                         accept_secondary_captures=True)
    from_file = _settings(database_url, tmp_path, script_path=script_file)

    async def scenario(pool: asyncpg.Pool) -> None:
        profile = await config.active_script(pool, built_in)
        assert (profile.source, profile.text, profile.version, profile.changed_by) == (
            config.BUILT_IN, None, 0, None)
        assert profile.options == ("retain_uids",)
        assert profile.name is not None and "retain_uids" in profile.name
        script = await config.active_script(pool, from_file)
        assert (script.source, script.text, script.dialect, script.name) == (
            config.FILE, SCRIPT_TEXT, "ctp", "site.script")
        assert script.sha256 == hashlib.sha256(script_file.read_bytes()).hexdigest()
        no_filter = await config.active_filter(pool, built_in)
        assert (no_filter.source, no_filter.text) == (config.BUILT_IN, None)
        assert no_filter.options == ("reject_structured_reports", "reject_identifying_pixels")

    _run(database_url, scenario)


def test_replacing_and_resetting_keep_the_history(database_url: str, tmp_path: Path) -> None:
    settings = _settings(database_url, tmp_path)

    async def scenario(pool: asyncpg.Pool) -> None:
        async with pool.acquire() as connection:
            saved = await config.replace_document(connection, config.SCRIPT, SCRIPT_TEXT,
                                                  "alice")
            filtered = await config.replace_document(connection, config.FILTER, FILTER_TEXT,
                                                     "bob")
            second = await config.replace_document(connection, config.SCRIPT,
                                                   SCRIPT_TEXT + "# again\n", "carol")
        assert (saved.version, filtered.version, second.version) == (1, 2, 3)
        assert await config.configuration_version(pool) == 3
        active = await config.active_script(pool, settings)
        assert (active.source, active.text, active.changed_by, active.version) == (
            config.INDEX, SCRIPT_TEXT + "# again\n", "carol", 3)
        assert active.sha256 == hashlib.sha256(active.text.encode()).hexdigest()
        assert active.dialect == "ctp"
        active_filter = await config.active_filter(pool, settings)
        assert (active_filter.source, active_filter.text) == (config.INDEX, FILTER_TEXT)

        async with pool.acquire() as connection:
            reset = await config.reset_document(connection, config.SCRIPT, "dave")
        assert reset == 4
        back = await config.active_script(pool, settings)
        assert (back.source, back.text, back.version, back.changed_by) == (
            config.BUILT_IN, None, 4, "dave")
        history = await config.document_history(pool, config.SCRIPT, 10)
        assert [(h.version, h.source, h.changed_by) for h in history] == [
            (4, "settings", "dave"), (3, config.INDEX, "carol"), (1, config.INDEX, "alice")]
        assert history[0].replaced_at is None
        assert history[1].replaced_at == history[0].changed_at
        assert history[2].replaced_at == history[1].changed_at
        assert history[2].text == SCRIPT_TEXT
        assert [h.version for h in await config.document_history(pool, config.SCRIPT, 1)
                ] == [4]
        assert [h.version for h in await config.document_history(pool, config.FILTER)] == [2]

        # The history cannot be rewritten.
        async with pool.acquire() as connection:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await connection.execute("UPDATE config_document SET changed_by = 'x'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await connection.execute("DELETE FROM config_document")

    _run(database_url, scenario)


def test_an_invalid_document_is_refused_and_nothing_changes(
    database_url: str, tmp_path: Path
) -> None:
    settings = _settings(database_url, tmp_path)

    async def scenario(pool: asyncpg.Pool) -> None:
        async with pool.acquire() as connection:
            await config.replace_document(connection, config.FILTER, FILTER_TEXT, "alice")
            with pytest.raises(config.InvalidDocument, match=r"^line 2: ") as caught:
                await config.replace_document(
                    connection, config.FILTER, 'Modality.equals("CT")\n+ PatientID.equals(',
                    "mallory")
            assert caught.value.line == 2
            with pytest.raises(config.InvalidDocument, match="unknown function"):
                await config.replace_document(
                    connection, config.SCRIPT, "set.[0010,0010]PatientName=@nosuch()\n",
                    "mallory")
            with pytest.raises(ValueError, match="changed_by"):
                await config.replace_document(connection, config.FILTER, FILTER_TEXT, " ")
        assert await config.configuration_version(pool) == 1
        active = await config.active_filter(pool, settings)
        assert (active.text, active.changed_by) == (FILTER_TEXT, "alice")

    _run(database_url, scenario)


def test_a_change_is_part_of_the_callers_transaction(database_url: str) -> None:
    async def scenario(pool: asyncpg.Pool) -> None:
        async with pool.acquire() as connection:
            with pytest.raises(RuntimeError):
                async with connection.transaction():
                    await config.replace_document(connection, config.SCRIPT, SCRIPT_TEXT,
                                                  "alice")
                    raise RuntimeError("the caller's audit record failed")
            assert await config.configuration_version(connection) == 0
            async with connection.transaction():
                await config.replace_document(connection, config.SCRIPT, SCRIPT_TEXT, "alice")
            assert await config.configuration_version(connection) == 1

    _run(database_url, scenario)


def test_concurrent_changes_get_versions_in_commit_order(database_url: str) -> None:
    async def change(pool: asyncpg.Pool, n: int) -> int:
        async with pool.acquire() as connection:
            saved = await config.replace_document(connection, config.FILTER,
                                                  f'Modality.equals("M{n}")', f"admin{n}")
            return saved.version

    async def scenario(pool: asyncpg.Pool) -> None:
        versions = await asyncio.gather(*(change(pool, n) for n in range(12)))
        assert sorted(versions) == list(range(1, 13))
        history = await config.document_history(pool, config.FILTER, 20)
        times = [h.changed_at for h in reversed(history)]
        assert times == sorted(times)

    _run(database_url, scenario)


def test_the_export_switch(database_url: str) -> None:
    async def scenario(pool: asyncpg.Pool) -> None:
        assert await config.export_enabled(pool, True) is True
        assert await config.export_enabled(pool, False) is False
        assert await config.runtime_setting(pool, config.EXPORT_ENABLED) is None
        async with pool.acquire() as connection:
            await config.set_export_enabled(connection, False, "alice")
        assert await config.export_enabled(pool, True) is False
        async with pool.acquire() as connection:
            await config.set_export_enabled(connection, True, "bob")
        assert await config.export_enabled(pool, False) is True
        setting = await config.runtime_setting(pool, config.EXPORT_ENABLED)
        assert setting is not None
        assert (setting.value, setting.changed_by) == (True, "bob")

    _run(database_url, scenario)
