"""A running worker follows the script and filter saved in the index: new objects get the
new rules within the refresh period, objects made before keep the rules that made them,
an invalid document changes nothing, and a reset goes back to the settings."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from services.anonymizer_worker.worker import AnonymizerWorker
from shared.config import Settings, load_settings
from shared.deid.live import LivePseudonymizer
from shared.index import configuration as config
from shared.ingest import Ingest
from shared.messaging import ANONYMIZE
from shared.runtime import Resources, open_resources, pseudonymizer_from
from tests import synth
from tests.messaging_support import wait_until

pytestmark = pytest.mark.integration

SCRIPTS = Path(__file__).parents[1] / "data" / "ctp-scripts"
REMOVED = '<e en="T" t="00080080" n="InstitutionName">@remove()</e>'
REPLACED = '<e en="T" t="00080080" n="InstitutionName">RESEARCH SITE</e>'


def site_script() -> str:
    """A site's full CTP script that names the institution (the built-in profile replaces
    the name with ANONYMIZED)."""
    text = (SCRIPTS / "rsna-java-dicom-anonymizer.script").read_text(encoding="utf-8")
    assert REMOVED in text
    return text.replace(REMOVED, REPLACED)


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    synth.write(ds, buffer)
    return buffer.getvalue()


@dataclass
class Running:
    resources: Resources
    worker: AnonymizerWorker
    ingest: Ingest

    @property
    def live(self) -> LivePseudonymizer:
        assert isinstance(self.worker.pseudonymizer, LivePseudonymizer)
        return self.worker.pseudonymizer

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self.resources.index.pool.acquire() as connection:
            return [dict(r) for r in await connection.fetch(sql, *args)]

    async def take_in(self, ds: Dataset, table: str = "instance",
                      order: str = "id") -> dict[str, Any]:
        """Receive one object and wait for its row in ``table`` (the latest by ``order``)."""
        before = len(await self.fetch(f"SELECT 1 FROM {table}"))
        await self.ingest.receive(_bytes(ds), "import")

        async def arrived() -> bool:
            return len(await self.fetch(f"SELECT 1 FROM {table}")) > before

        await wait_until(arrived, 30, f"a row in {table}")
        return (await self.fetch(f"SELECT * FROM {table} ORDER BY {order} DESC LIMIT 1"))[0]

    async def output(self, row: dict[str, Any]) -> pydicom.Dataset:
        data = await self.resources.store.get(self.resources.buckets.deidentified,
                                              row["object_key"])
        return pydicom.dcmread(io.BytesIO(data))

    async def change(self, kind: str, text: str | None, by: str = "alice") -> int:
        async with self.resources.index.pool.acquire() as connection:
            if text is None:
                return await config.reset_document(connection, kind, by)
            return (await config.replace_document(connection, kind, text, by)).version


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    resources = await open_resources(settings)
    try:
        worker = AnonymizerWorker(resources.store, resources.buckets, resources.broker,
                                  pseudonymizer_from(settings, resources))
        await resources.broker.consume(ANONYMIZE, worker.handle, prefetch=4)
        ingest = Ingest(resources.store, resources.buckets, resources.broker,
                        resources.index.index)
        yield Running(resources, worker, ingest)
        await ingest.drain()
    finally:
        await resources.close()


def _settings(database_url: str, tmp: Path) -> Settings:
    return load_settings(database_url=database_url, data_dir=tmp / "data", amqp_url=None,
                         s3_endpoint=None)


def test_new_objects_follow_a_replaced_script_and_filter(
    database_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with running(_settings(database_url, tmp_path)) as system:
            system.live.refresh_seconds = 0.3
            (first,) = synth.make_ct_series(1, patient_index=0)
            made_before = await system.take_in(first)
            assert made_before["script_name"].startswith("built-in: PS3.15")
            assert (await system.output(made_before)).InstitutionName == "ANONYMIZED"

            script = site_script()
            version = await system.change(config.SCRIPT, script)
            await asyncio.sleep(0.4)
            (second,) = synth.make_ct_series(1, patient_index=1)
            after = await system.take_in(second)
            assert after["script_name"] == f"CTP script index-v{version}"
            active = await config.active_script(system.resources.index.pool,
                                                system.live.settings)
            assert after["script_sha256"] == active.sha256
            assert (await system.output(after)).InstitutionName == "RESEARCH SITE"
            # The object made before keeps the name and SHA-256 of its rules.
            (still,) = await system.fetch("SELECT * FROM instance WHERE id = $1",
                                          made_before["id"])
            assert (still["script_name"], still["script_sha256"]) == (
                made_before["script_name"], made_before["script_sha256"])

            # An invalid replacement is refused; the script in force stays.
            with pytest.raises(config.InvalidDocument):
                await system.change(config.SCRIPT, script.replace("RESEARCH SITE",
                                                                  "@nosuchfunction()"))
            await asyncio.sleep(0.4)
            (third,) = synth.make_ct_series(1, patient_index=2)
            assert (await system.take_in(third))["script_name"] == after["script_name"]

            # A filter refusing CT: the next CT is quarantined by it.
            await system.change(config.FILTER, '!Modality.equals("CT")')
            await asyncio.sleep(0.4)
            (refused,) = synth.make_ct_series(1, patient_index=3)
            quarantined = await system.take_in(refused, "quarantined_object", "quarantined_at")
            assert quarantined["reason"] == "not accepted by the filter script"

            # Both reset: the settings' choice (the built-in profile, no filter) again.
            await system.change(config.FILTER, None)
            await system.change(config.SCRIPT, None)
            await asyncio.sleep(0.4)
            (last,) = synth.make_ct_series(1, patient_index=4)
            back = await system.take_in(last)
            assert back["script_name"] == made_before["script_name"]
            assert (await system.output(back)).InstitutionName == "ANONYMIZED"
            counts = await system.fetch(
                "SELECT count(*) AS n, count(DISTINCT original_sop_instance_uid) AS u"
                " FROM instance")
            assert counts == [{"n": 4, "u": 4}]

    asyncio.run(scenario())


def test_the_version_is_checked_at_most_once_per_refresh_period(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[int] = []
    real = config.configuration_version

    async def counted(executor: Any) -> int:
        version = await real(executor)
        checks.append(version)
        return version

    monkeypatch.setattr(config, "configuration_version", counted)

    async def scenario() -> None:
        async with running(_settings(database_url, tmp_path)) as system:
            live = system.live
            assert live.refresh_seconds == config.CONFIG_REFRESH_SECONDS == 5.0
            live.refresh_seconds = 0.5
            first = await live.current()
            for _ in range(50):
                assert await live.current() is first
            assert checks == [0]
            await system.change(config.FILTER, 'Modality.equals("CT")')
            assert await live.current() is first  # within the period: not seen yet
            await asyncio.sleep(0.6)
            changed = await live.current()
            assert changed is not first and live.version == 1
            assert checks == [0, 1]
            assert changed.rules is first.rules  # the script did not change
            await asyncio.sleep(0.6)
            assert await live.current() is changed  # same version: nothing rebuilt

    asyncio.run(scenario())


def test_no_object_is_deidentified_before_the_configuration_was_read(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def down(executor: Any) -> int:
        raise ConnectionRefusedError("the index is down")

    async def scenario() -> None:
        async with running(_settings(database_url, tmp_path)) as system:
            await system.change(config.SCRIPT, site_script())
            live = system.live
            live.refresh_seconds = 0.1
            with monkeypatch.context() as patched:
                patched.setattr(config, "configuration_version", down)
                with pytest.raises(ConnectionRefusedError):
                    await live.current()  # never read: the settings' profile is not used
            in_force = await live.current()
            assert in_force.rules.name == "CTP script index-v1"
            await asyncio.sleep(0.2)
            with monkeypatch.context() as patched:
                patched.setattr(config, "configuration_version", down)
                with caplog.at_level(logging.WARNING):
                    assert await live.current() is in_force  # read once: kept
            assert "configuration not checked; the rules in force stay" in caplog.messages

    asyncio.run(scenario())
