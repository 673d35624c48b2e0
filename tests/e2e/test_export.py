"""The exporter against real destinations (Orthanc, DCMTK's storescp): de-identified
objects made by the real pipeline (ingest, anonymizer worker, relinker) on PostgreSQL, the
local object store and in-process queues (one test runs the service's pieces on RabbitMQ
and S3). Every job, message, log record, exception and exported file is searched for the
planted PHI and original UIDs.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from services.anonymizer_worker.worker import AnonymizerWorker
from services.exporter.app import start_exporter, stop_exporter
from services.rt_relinker.relinker import RtRelinker
from shared.config import Settings, load_settings
from shared.export import (
    ExportDisabled,
    Exporter,
    ExportError,
    ExportNotConfigured,
    NothingToExport,
)
from shared.index import jobs
from shared.ingest import Ingest
from shared.messaging import ANONYMIZE, EXPORT, RELINK, RabbitBroker
from shared.runtime import Resources, open_resources, pseudonymizer_from
from tests import synth
from tests.messaging_support import wait_until
from tests.orthanc import Orthanc, orthanc_factory  # noqa: F401
from tests.s3_server import S3Endpoint, free_port
from tests.s3_server import _remove_buckets as remove_buckets

pytestmark = pytest.mark.integration

AET = "RESEARCH"
STORESCP = "/usr/bin/storescp"


def _bytes(ds: Dataset, transfer_syntax: str | None = None) -> bytes:
    buffer = io.BytesIO()
    synth.write(ds, buffer, transfer_syntax)
    return buffer.getvalue()


def _settings(database_url: str, data: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url, "data_dir": data, "amqp_url": None, "s3_endpoint": None,
        "export_called_ae": AET, "export_calling_ae": "ANONEXPORT",
        "export_quiet_seconds": 0, "export_retries": 6, "export_retry_delay_seconds": 0.2,
        "export_timeout_seconds": 5, "retry_delay_seconds": 0.2, "retry_max_delay_seconds": 1,
    }
    values.update(extra)
    return load_settings(**values)


@dataclass
class System:
    """The pipeline and an exporter on one test database."""

    settings: Settings
    resources: Resources
    exporter: Exporter
    ingest: Ingest
    forbidden: set[bytes] = field(default_factory=set)  # PHI of every object taken in

    @property
    def pool(self) -> Any:
        return self.resources.index.pool

    async def take_in(self, datasets: Iterable[Dataset],
                      transfer_syntax: str | None = None) -> None:
        """Receive the objects and wait until each is de-identified."""
        datasets = list(datasets)
        expected = await self.count("SELECT count(*) FROM instance") + len(datasets)
        for ds in datasets:
            self.forbidden |= set(synth.phi_strings(_phi_of(ds)))
            self.forbidden |= {uid.encode() for uid in synth.original_uids([ds])}
            await self.ingest.receive(_bytes(ds, transfer_syntax), "import")

        async def reached() -> bool:
            return await self.count("SELECT count(*) FROM instance") >= expected
        await wait_until(reached, 60, "the objects to be de-identified")

    async def count(self, sql: str, *args: Any) -> int:
        async with self.pool.acquire() as connection:
            return int(await connection.fetchval(sql, *args))

    async def pseudonym(self, patient_index: int) -> str:
        async with self.pool.acquire() as connection:
            value = await connection.fetchval(
                "SELECT pseudo_patient_id FROM patient WHERE original_patient_id = $1",
                synth.phi_for(patient_index).patient_id)
        assert value, f"patient {patient_index} not de-identified"
        return str(value)

    async def sop_uids(self, patient: str) -> set[str]:
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT pseudo_sop_instance_uid FROM instance WHERE pseudo_patient_id = $1",
                patient)
        return {row[0] for row in rows}

    async def statuses(self, patient: str) -> list[dict[str, Any]]:
        """The export_instance rows of the patient's instances."""
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT e.* FROM export_instance e JOIN instance i ON i.id = e.instance"
                " WHERE i.pseudo_patient_id = $1 ORDER BY e.instance", patient)
        return [dict(row) for row in rows]

    async def exported_at(self, patient: str) -> Any:
        async with self.pool.acquire() as connection:
            return await connection.fetchval(
                "SELECT exported_at FROM patient WHERE pseudo_patient_id = $1", patient)

    async def finished(self, job_id: int, timeout: float = 60) -> jobs.Job:
        """The job once it is finished (AssertionError after ``timeout`` seconds)."""
        async def done() -> bool:
            return (await jobs.get_job(self.pool, job_id)).finished
        await wait_until(done, timeout, f"job {job_id} to finish")
        job = await jobs.get_job(self.pool, job_id)
        self.assert_no_phi(json.dumps(job.public()))
        return job

    async def item_in(self, job_id: int, status: str, timeout: float = 30) -> jobs.Item:
        async def reached() -> bool:
            return (await jobs.item(self.pool, job_id, 1)).status == status
        await wait_until(reached, timeout, f"item {status}")
        return await jobs.item(self.pool, job_id, 1)

    def assert_no_phi(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        leaks = [s for s in self.forbidden if s in data]
        assert not leaks, f"{len(leaks)} planted values in {data[:200]!r}"


def _phi_of(ds: Dataset) -> synth.PHIValues:
    for index in range(64):
        if synth.phi_for(index).patient_id == ds.PatientID:
            return synth.phi_for(index)
    raise AssertionError("a synthetic object of an unknown patient")


@asynccontextmanager
async def running(settings: Settings, relinker: bool = False) -> AsyncIterator[System]:
    resources = await open_resources(settings)
    try:
        worker = AnonymizerWorker(resources.store, resources.buckets, resources.broker,
                                  pseudonymizer_from(settings, resources))
        await resources.broker.consume(ANONYMIZE, worker.handle, prefetch=4)
        if relinker:
            linker = RtRelinker(resources.store, resources.index.pool,
                                resources.buckets.deidentified)
            await resources.broker.consume(RELINK, linker.handle, prefetch=4)
        exporter = Exporter(settings, resources)
        await resources.broker.consume(EXPORT, exporter.handle, prefetch=2)
        ingest = Ingest(resources.store, resources.buckets, resources.broker,
                        resources.index.index)
        yield System(settings, resources, exporter, ingest)
        await ingest.drain()
    finally:
        await resources.close()


def _orthanc_settings(database_url: str, tmp: Path, orthanc: Orthanc, **extra: Any) -> Settings:
    return _settings(database_url, tmp / "data", export_host=orthanc.host,
                     export_port=orthanc.dicom_port, **extra)


def _orthanc_files(orthanc: Orthanc) -> list[bytes]:
    return [orthanc.instance_file(i) for i in orthanc.instances()]


# -- tests -----------------------------------------------------------------------------


def test_a_patient_is_exported_once_and_again_only_when_forced(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture,
    orthanc_factory: Any,  # noqa: F811
) -> None:
    orthanc = orthanc_factory(AET)
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        async with running(_orthanc_settings(database_url, tmp_path, orthanc)) as system:
            await system.take_in(synth.make_ct_series(5, patient_index=1))
            await system.take_in(synth.make_ct_series(2, patient_index=2))
            patient = await system.pseudonym(1)
            job = await system.finished(await system.exporter.request([patient]))
            (item,) = job.items
            assert job.status == item.status == jobs.COMPLETE, item.message
            assert item.key == patient
            assert item.counts["expected"] == item.counts["verified"] == 5
            assert item.counts["failed"] == 0
            uids = await system.sop_uids(patient)
            assert orthanc.sop_instance_uids() == uids  # every one, and nobody else's
            files = _orthanc_files(orthanc)
            assert len(files) == 5
            for data in files:
                system.assert_no_phi(data)
            rows = await system.statuses(patient)
            assert [(r["status"], r["attempts"], r["job"]) for r in rows] == [
                ("sent", 1, job.id)] * 5
            assert {r["destination"] for r in rows} == {
                f"{AET}@{orthanc.host}:{orthanc.dicom_port}"}
            first_date = await system.exported_at(patient)
            assert first_date is not None
            assert await system.exported_at(await system.pseudonym(2)) is None

            # Again: nothing new is sent.
            again = await system.finished(await system.exporter.request([patient]))
            assert again.status == jobs.COMPLETE
            assert again.items[0].counts["expected"] == again.items[0].counts["verified"] == 0
            assert "nothing new" in again.items[0].message
            assert len(orthanc.instances()) == 5
            assert await system.statuses(patient) == rows
            assert await system.exported_at(patient) == first_date

            # Forced: everything again (Orthanc keeps one copy of each).
            orthanc.clear()
            forced = await system.finished(await system.exporter.request([patient],
                                                                         force=True))
            assert forced.status == jobs.COMPLETE
            assert forced.items[0].counts["verified"] == 5
            assert orthanc.sop_instance_uids() == uids
            rows = await system.statuses(patient)
            assert [(r["attempts"], r["job"]) for r in rows] == [(2, forced.id)] * 5
            assert await system.exported_at(patient) > first_date

            # Handling a finished item's message again changes nothing.
            await system.resources.broker.publish(EXPORT, {"job": forced.id, "position": 1},
                                                  "again")
            await asyncio.sleep(0.5)
            assert await system.statuses(patient) == rows

            exporting = [r for r in caplog.records if r.name.startswith("shared.export")]
            assert {r.getMessage() for r in exporting} >= {"export requested",
                                                           "export finished"}
            for record in caplog.records:
                fields = json.dumps(getattr(record, "fields", {}), default=str)
                system.assert_no_phi(f"{record.getMessage()} {fields}")

    asyncio.run(scenario())


def test_all_pending_sends_only_the_patients_not_yet_exported(
    tmp_path: Path, database_url: str, orthanc_factory: Any  # noqa: F811
) -> None:
    orthanc = orthanc_factory(AET)

    async def scenario() -> None:
        async with running(_orthanc_settings(database_url, tmp_path, orthanc)) as system:
            await system.take_in(synth.make_ct_series(2, patient_index=1))
            await system.take_in(synth.make_ct_series(3, patient_index=2))
            first, second = await system.pseudonym(1), await system.pseudonym(2)
            await system.finished(await system.exporter.request([first]))
            assert len(orthanc.instances()) == 2
            job = await system.finished(await system.exporter.request(all_pending=True))
            assert job.status == jobs.COMPLETE
            assert [(i.key, i.counts["verified"]) for i in job.items] == [(second, 3)]
            assert orthanc.sop_instance_uids() == (await system.sop_uids(first)
                                                   | await system.sop_uids(second))
            with pytest.raises(NothingToExport, match="every patient is exported") as refused:
                await system.exporter.request(all_pending=True)
            system.assert_no_phi(str(refused.value))
            # Forced, "all pending" is every patient, and everything again.
            orthanc.clear()
            forced = await system.finished(await system.exporter.request(all_pending=True,
                                                                         force=True))
            assert [(i.key, i.counts["verified"]) for i in forced.items] == [
                (first, 2), (second, 3)]
            assert len(orthanc.instances()) == 5
            # Unknown patients: still a job, failed, and an original ID is not kept.
            unknown = await system.finished(await system.exporter.request(
                ["123456-999999", synth.phi_for(1).patient_id]))
            assert unknown.status == jobs.FAILED
            assert [(i.key, i.line, i.status) for i in unknown.items] == [
                ("123456-999999", 1, jobs.FAILED), ("", 2, jobs.FAILED)]
            assert all(i.message.startswith("no such patient") for i in unknown.items)
            parameters = await jobs.parameters(system.pool, unknown.id)
            system.assert_no_phi(json.dumps(parameters))
            with pytest.raises(ExportError):
                await system.exporter.request([])

    asyncio.run(scenario())


def test_an_export_cut_by_the_destination_going_down_resumes_and_completes(
    tmp_path: Path, database_url: str, orthanc_factory: Any  # noqa: F811
) -> None:
    orthanc = orthanc_factory(AET)
    count = 100

    async def scenario() -> None:
        settings = _orthanc_settings(database_url, tmp_path, orthanc, export_retries=8,
                                     export_retry_delay_seconds=0.3)
        async with running(settings) as system:
            await system.take_in(synth.make_ct_series(count, rows=16, cols=16,
                                                      patient_index=3))
            patient = await system.pseudonym(3)
            job_id = await system.exporter.request([patient])

            async def some_sent() -> bool:
                return len(orthanc.instances()) >= 20
            await wait_until(some_sent, 30, "20 instances at Orthanc", interval=0.01)
            await asyncio.to_thread(orthanc.stop, True)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(orthanc.start)
            job = await system.finished(job_id)
            (item,) = job.items
            assert item.status == jobs.COMPLETE, item.message
            assert item.counts["expected"] == item.counts["verified"] == count
            assert item.counts["attempts"] >= 2  # it was cut, and resumed
            assert orthanc.sop_instance_uids() == await system.sop_uids(patient)
            rows = await system.statuses(patient)
            assert len(rows) == count and {r["status"] for r in rows} == {"sent"}
            assert {r["attempts"] for r in rows} == {1}  # none recorded twice
            assert await system.exported_at(patient) is not None

    asyncio.run(scenario())


def test_a_destination_down_at_the_start_is_waited_for_and_given_up_after_the_retries(
    tmp_path: Path, database_url: str, orthanc_factory: Any  # noqa: F811
) -> None:
    orthanc = orthanc_factory(AET)
    orthanc.stop(kill=True)  # keeps its ports: started again below

    async def scenario() -> None:
        settings = _orthanc_settings(database_url, tmp_path, orthanc, export_retries=2,
                                     export_retry_delay_seconds=0.2)
        async with running(settings) as system:
            await system.take_in(synth.make_ct_series(3, patient_index=4))
            patient = await system.pseudonym(4)
            # Down for good: the retries (0.2 + 0.4 s) are used up.
            failed = await system.finished(await system.exporter.request([patient]))
            (item,) = failed.items
            assert item.status == jobs.FAILED
            assert item.message.startswith("destination unavailable")
            assert "gave up after 2 retries" in item.message
            assert f"{AET}@{orthanc.host}:{orthanc.dicom_port}" in item.message
            assert item.counts["attempts"] == 3 and item.counts["failed"] == 3
            rows = await system.statuses(patient)
            assert {r["status"] for r in rows} == {"failed"} and len(rows) == 3
            assert await system.exported_at(patient) is None

            # Down at the start, up within the retries: it completes.
            starter = threading.Timer(0.4, orthanc.start)
            starter.start()
            try:
                job = await system.finished(await system.exporter.request([patient]))
            finally:
                starter.join()
            assert job.status == jobs.COMPLETE, job.items[0].message
            assert job.items[0].counts["verified"] == 3
            assert orthanc.sop_instance_uids() == await system.sop_uids(patient)
            assert {r["status"] for r in await system.statuses(patient)} == {"sent"}

    asyncio.run(scenario())


def test_a_wrong_called_ae_fails_the_item_with_the_reason_and_the_next_request_works(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture,
    orthanc_factory: Any,  # noqa: F811
) -> None:
    orthanc = orthanc_factory(AET)
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        wrong = _orthanc_settings(database_url, tmp_path, orthanc, export_called_ae="NOBODY")
        async with running(wrong) as system:
            await system.take_in(synth.make_ct_series(2, patient_index=5))
            patient = await system.pseudonym(5)
            job = await system.finished(await system.exporter.request([patient]))
            (item,) = job.items
            assert item.status == jobs.FAILED
            assert "rejected the association permanently" in item.message
            assert "called AE title NOBODY not recognised" in item.message
            # Not retried after the rejection. On a loaded machine a first round can end
            # temporarily before the answer (a timeout), and that one is retried: every
            # attempt but the last is such a retry, and there was one rejection only.
            said = [r.getMessage() for r in caplog.records]
            assert said.count("Association Rejected") == 1
            assert item.counts["attempts"] == said.count("export interrupted, retrying") + 1
            assert orthanc.instances() == []
            rows = await system.statuses(patient)
            assert {r["status"] for r in rows} == {"failed"}
            assert all("NOBODY" in r["reason"] for r in rows)
            # The same handler serves the next request, to the right AE title.
            system.exporter.settings = system.settings.model_copy(
                update={"export_called_ae": AET})
            again = await system.finished(await system.exporter.request([patient]))
            assert again.status == jobs.COMPLETE, again.items[0].message
            assert orthanc.sop_instance_uids() == await system.sop_uids(patient)

    asyncio.run(scenario())


def _storescp(folder: Path, port: int, *options: str) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [STORESCP, "-aet", AET, "-od", str(folder), *options, str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("storescp did not start")


def test_objects_in_a_transfer_syntax_the_destination_refuses_fail_and_the_rest_is_sent(
    tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    received = tmp_path / "received"
    scp = _storescp(received, port, "+xi")  # implicit VR little endian only

    async def scenario() -> None:
        settings = _settings(database_url, tmp_path / "data", export_host="127.0.0.1",
                             export_port=port)
        async with running(settings) as system:
            implicit = synth.make_ct_series(3, patient_index=6,
                                            transfer_syntax=ImplicitVRLittleEndian)
            explicit = synth.make_ct_series(2, patient_index=6, series_number=2)
            await system.take_in(implicit, ImplicitVRLittleEndian)
            await system.take_in(explicit, ExplicitVRLittleEndian)
            patient = await system.pseudonym(6)
            job = await system.finished(await system.exporter.request([patient]))
            (item,) = job.items
            assert item.status == jobs.FAILED
            assert item.counts["expected"] == 5
            assert item.counts["verified"] == 3 and item.counts["failed"] == 2
            assert "3 of 5 sent; 2 failed" in item.message
            assert "does not accept CT Image Storage in Explicit VR Little Endian" in (
                item.message)
            rows = await system.statuses(patient)
            assert sorted(r["status"] for r in rows) == ["failed"] * 2 + ["sent"] * 3
            for row in rows:
                if row["status"] == "failed":
                    assert "Explicit VR Little Endian" in row["reason"]
            assert len(list(received.iterdir())) == 3
            for path in received.iterdir():
                system.assert_no_phi(path.read_bytes())
            assert await system.exported_at(patient) is None

    try:
        asyncio.run(scenario())
    finally:
        scp.kill()
        scp.wait()


def test_export_switched_off_or_without_a_destination_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        switched_off = _settings(database_url, tmp_path / "data", export_host="127.0.0.1",
                                 export_enabled=False)
        async with running(switched_off) as system:
            await system.take_in(synth.make_ct_series(1, patient_index=7))
            patient = await system.pseudonym(7)
            with pytest.raises(ExportDisabled, match=r"export is switched off "
                                                     r"\(EXPORT_ENABLED=false\)") as off:
                await system.exporter.request([patient])
            system.exporter.settings = _settings(database_url, tmp_path / "data")
            with pytest.raises(ExportNotConfigured, match="no export destination: set "
                                                          "EXPORT_HOST") as unset:
                await system.exporter.request([patient])
            system.assert_no_phi(f"{off.value} {unset.value}")
            assert await system.count("SELECT count(*) FROM job") == 0

    asyncio.run(scenario())


def test_an_unsettled_patient_waits_and_the_sweep_exports_it_once_settled(
    tmp_path: Path, database_url: str, orthanc_factory: Any  # noqa: F811
) -> None:
    orthanc = orthanc_factory(AET)
    rt = synth.make_rt_set(n_ct=2, patient_index=8)

    async def scenario() -> None:
        settings = _orthanc_settings(database_url, tmp_path, orthanc,
                                     export_quiet_seconds=1.5)
        async with running(settings, relinker=True) as system:
            await system.take_in([*rt.ct, rt.rtstruct, rt.rtplan])  # the dose is missing
            patient = await system.pseudonym(8)

            async def set_waiting() -> bool:
                return await system.count(
                    "SELECT count(*) FROM rt_set WHERE status = 'waiting'") == 1
            await wait_until(set_waiting, 30, "the RT set to wait for its dose")
            job_id = await system.exporter.request([patient])
            item = await system.item_in(job_id, jobs.WAITING)
            assert item.message.startswith("1 study not settled: RT set waiting")
            assert "last object" in item.message
            sweeper = asyncio.create_task(system.exporter.run_sweeper())
            try:
                await asyncio.sleep(2.5)  # the quiet period passes; the RT set still waits
                item = await jobs.item(system.pool, job_id, 1)
                assert item.status == jobs.WAITING
                assert item.message == "1 study not settled: RT set waiting"
                assert orthanc.instances() == []
                await system.take_in([rt.rtdose])

                async def set_complete() -> bool:
                    return await system.count(
                        "SELECT count(*) FROM rt_set WHERE status = 'complete'") == 1
                await wait_until(set_complete, 30, "the RT set to be complete")
                job = await system.finished(job_id, timeout=30)
            finally:
                sweeper.cancel()
            assert job.status == jobs.COMPLETE, job.items[0].message
            assert job.items[0].counts["verified"] == 5
            assert orthanc.sop_instance_uids() == await system.sop_uids(patient)

            # Quiet period not over, settle=False: exported at once.
            await system.take_in(synth.make_ct_series(2, patient_index=9))
            other = await system.pseudonym(9)
            waiting = await system.exporter.request([other])
            assert (await system.item_in(waiting, jobs.WAITING)).message.startswith(
                "1 study not settled: last object")
            now = await system.finished(await system.exporter.request([other], settle=False),
                                        timeout=10)
            assert now.status == jobs.COMPLETE
            assert await system.sop_uids(other) <= orthanc.sop_instance_uids()

    asyncio.run(scenario())


def test_the_service_pieces_export_over_rabbitmq_from_s3(
    tmp_path: Path, database_url: str, rabbit_broker: RabbitBroker, s3_endpoint: S3Endpoint,
    orthanc_factory: Any,  # noqa: F811
) -> None:
    """The deployed backends (RabbitMQ, S3) with the exporter started by start_exporter,
    as the exporter service and anon serve start it: the item waits for the quiet period,
    and the sweeper task announces it again."""
    orthanc = orthanc_factory(AET)
    suffix = uuid.uuid4().hex[:8]
    names = {f"bucket_{b}": f"{b}-{suffix}"
             for b in ("incoming", "deidentified", "quarantine", "exports")}

    async def scenario() -> None:
        settings = _orthanc_settings(
            database_url, tmp_path, orthanc, export_quiet_seconds=2,
            s3_endpoint=s3_endpoint.endpoint, s3_access_key=s3_endpoint.access_key,
            s3_secret_key=s3_endpoint.secret_key, s3_secure=s3_endpoint.secure, **names)
        resources = await open_resources(settings, rabbit_broker)
        try:
            worker = AnonymizerWorker(resources.store, resources.buckets, resources.broker,
                                      pseudonymizer_from(settings, resources))
            await resources.broker.consume(ANONYMIZE, worker.handle)
            exporter, consumer, sweeper = await start_exporter(settings, resources)
            system = System(settings, resources, exporter,
                            Ingest(resources.store, resources.buckets, resources.broker,
                                   resources.index.index))
            try:
                await system.take_in(synth.make_ct_series(3, patient_index=10))
                patient = await system.pseudonym(10)
                job_id = await exporter.request([patient])
                await system.item_in(job_id, jobs.WAITING)
                job = await system.finished(job_id, timeout=30)
            finally:
                await stop_exporter(consumer, sweeper)
                await system.ingest.drain()
            assert job.status == jobs.COMPLETE, job.items[0].message
            assert job.items[0].counts["verified"] == 3
            assert orthanc.sop_instance_uids() == await system.sop_uids(patient)
            for data in _orthanc_files(orthanc):
                system.assert_no_phi(data)
        finally:
            await resources.close()

    try:
        asyncio.run(scenario())
    finally:
        remove_buckets(s3_endpoint, list(names.values()))
