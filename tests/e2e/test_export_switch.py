"""The export switch an administrator changes in the index while the exporter runs
(Orthanc as the destination): switched off, requests are refused and requested items wait
unsent; switched on, they are sent; the index's switch wins over EXPORT_ENABLED."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from shared.export import ExportDisabled
from shared.index import configuration as config
from shared.index import jobs
from shared.messaging import EXPORT
from tests import synth
from tests.e2e.test_export import AET, System, _orthanc_settings, running

pytestmark = pytest.mark.integration


async def _switch(system: System, enabled: bool) -> None:
    async with system.pool.acquire() as connection:
        await config.set_export_enabled(connection, enabled, "admin-test")


def test_switching_export_off_stops_new_exports_and_on_resumes_them(
    tmp_path: Path, database_url: str, orthanc_factory: Any
) -> None:
    orthanc = orthanc_factory(AET)

    async def scenario() -> None:
        settings = _orthanc_settings(database_url, tmp_path, orthanc,
                                     export_quiet_seconds=0.5)
        async with running(settings) as system:
            exporter = system.exporter
            sweeper = asyncio.create_task(exporter.run_sweeper())
            try:
                await _switch_off_and_on(system, orthanc)
            finally:
                sweeper.cancel()

    asyncio.run(scenario())


async def _switch_off_and_on(system: System, orthanc: Any) -> None:
    await system.take_in(synth.make_ct_series(3, patient_index=1))
    await system.take_in(synth.make_ct_series(2, patient_index=2))
    first, second = await system.pseudonym(1), await system.pseudonym(2)
    exporter = system.exporter
    assert exporter.switch_seconds == config.CONFIG_REFRESH_SECONDS
    assert await exporter.enabled()

    await _switch(system, False)
    started = time.monotonic()
    while await exporter.enabled():
        await asyncio.sleep(0.1)
    assert time.monotonic() - started <= config.CONFIG_REFRESH_SECONDS + 0.5
    with pytest.raises(ExportDisabled, match=r"^export is switched off "
                                             r"\(by admin-test, \d{4}-"):
        await exporter.request([first])

    # An item another exporter created before it saw the switch waits, unsent.
    where = f"{AET}@{orthanc.host}:{orthanc.dicom_port}"
    job = await jobs.create_job(system.pool, jobs.EXPORT, {
        "patients": [first], "all_pending": False, "force": False, "settle": True,
        "destination": where}, [jobs.NewItem(first)])
    await system.resources.broker.publish(EXPORT, {"job": job, "position": 1},
                                          f"export-{job}-1")
    item = await system.item_in(job, jobs.WAITING)
    assert item.message.startswith("export is switched off (by admin-test")
    await asyncio.sleep(3)  # several sweeps: none announces it
    assert (await jobs.item(system.pool, job, 1)).status == jobs.WAITING
    assert orthanc.instances() == []

    await _switch(system, True)
    done = await system.finished(job, timeout=config.CONFIG_REFRESH_SECONDS + 15)
    assert done.status == jobs.COMPLETE, done.items[0].message
    assert orthanc.sop_instance_uids() == await system.sop_uids(first)
    again = await system.finished(await exporter.request([second]))
    assert again.status == jobs.COMPLETE
    assert len(orthanc.instances()) == 5


def test_the_index_switch_wins_over_the_setting(
    tmp_path: Path, database_url: str, orthanc_factory: Any
) -> None:
    orthanc = orthanc_factory(AET)

    async def scenario() -> None:
        settings = _orthanc_settings(database_url, tmp_path, orthanc, export_enabled=False)
        async with running(settings) as system:
            await system.take_in(synth.make_ct_series(2, patient_index=3))
            patient = await system.pseudonym(3)
            exporter = system.exporter
            with pytest.raises(ExportDisabled, match=r"EXPORT_ENABLED=false"):
                await exporter.request([patient])
            await _switch(system, True)
            exporter.switch_seconds = 0
            job = await system.finished(await exporter.request([patient]))
            assert job.status == jobs.COMPLETE
            assert orthanc.sop_instance_uids() == await system.sop_uids(patient)

    asyncio.run(scenario())
