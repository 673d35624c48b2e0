"""PHI retention: received objects are deleted once their result is durable (or after
INCOMING_RETENTION_DAYS), and operators list, release and purge the quarantine."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from services.anonymizer_worker.worker import AnonymizerWorker
from shared.config import Settings, load_settings
from shared.ingest import Ingest
from shared.messaging import ANONYMIZE, RabbitBroker
from shared.quarantine import announce_released, list_quarantined, release
from shared.recovery import sweep_incoming
from shared.runtime import Resources, open_resources, pseudonymizer_from, topology_from
from shared.storage import Buckets
from tests import synth
from tests.messaging_support import make_rabbit_broker, unique_prefix, wait_until
from tests.s3_server import S3Endpoint

pytestmark = pytest.mark.integration


def _bytes(ds: object) -> bytes:
    buffer = io.BytesIO()
    synth.write(ds, buffer)
    return buffer.getvalue()


def _settings(database_url: str, data: Path, **extra: object) -> Settings:
    return load_settings(database_url=database_url, data_dir=data, amqp_url=None,
                         s3_endpoint=None, **extra)


@asynccontextmanager
async def _system(
    settings: Settings, *, keep_received: bool = False
) -> AsyncIterator[Resources]:
    """The index, the local object folder and in-process queues, with a worker consuming."""
    resources = await open_resources(settings)
    try:
        worker = AnonymizerWorker(resources.store, resources.buckets, resources.broker,
                                  pseudonymizer_from(settings, resources),
                                  keep_received=keep_received)
        await resources.broker.consume(ANONYMIZE, worker.handle)
        yield resources
    finally:
        await resources.close()


async def _count(resources: Resources, table: str) -> int:
    async with resources.index.pool.acquire() as connection:
        value: int = await connection.fetchval(f"SELECT count(*) FROM {table}")
    return value


def _until(resources: Resources, table: str, expected: int) -> Callable[[], Awaitable[bool]]:
    async def reached() -> bool:
        return await _count(resources, table) >= expected

    return reached


def test_a_received_object_is_deleted_once_its_result_is_durable(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        async with _system(_settings(database_url, tmp_path / "d")) as system:
            ingest = Ingest(system.store, system.buckets, system.broker, system.index.index)
            (ct,) = synth.make_ct_series(1)
            await ingest.receive(_bytes(ct), "import")
            await ingest.receive(_bytes(synth.make_sr()), "import")  # refused: an SR
            await wait_until(_until(system, "instance", 1), 30, "de-identified")
            await wait_until(_until(system, "quarantined_object", 1), 30, "quarantined")
            await asyncio.sleep(0.3)
            buckets = system.buckets
            assert await system.store.list_keys(buckets.incoming) == []
            assert len(await system.store.list_keys(buckets.deidentified)) == 1
            assert len(await system.store.list_keys(buckets.quarantine)) == 1
            await ingest.drain()

    asyncio.run(scenario())


def test_kept_received_objects_are_deleted_by_the_sweep_once_their_retention_passed(
    tmp_path: Path, database_url: str
) -> None:
    async def scenario() -> None:
        settings = _settings(database_url, tmp_path / "d", incoming_retention_days=1)
        async with _system(settings, keep_received=True) as system:
            ingest = Ingest(system.store, system.buckets, system.broker, system.index.index)
            first, second = synth.make_ct_series(2)
            processed = (await ingest.receive(_bytes(first), "import")).key
            await wait_until(_until(system, "instance", 1), 30, "de-identified")
            # Received but never announced: no result, so never deleted.
            from shared.ingest import object_key

            waiting = object_key(str(second.SOPInstanceUID))
            await system.store.put(system.buckets.incoming, waiting, _bytes(second))
            incoming = system.buckets.incoming
            assert sorted(await system.store.list_keys(incoming)) == sorted([processed, waiting])
            index = system.index.index
            assert await sweep_incoming(system.store, system.buckets, index, 1) == 0
            async with system.index.pool.acquire() as connection:
                await connection.execute(
                    "UPDATE instance SET created_at = now() - interval '2 days'")
            assert await sweep_incoming(system.store, system.buckets, index, 1) == 1
            assert await system.store.list_keys(incoming) == [waiting]
            assert await sweep_incoming(system.store, system.buckets, index, 0) == 0
            assert await system.store.list_keys(incoming) == [waiting]
            await ingest.drain()

    asyncio.run(scenario())


def _anon(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_anon_quarantine_lists_releases_and_purges(tmp_path: Path, database_url: str) -> None:
    """On the data folder (embedded objects; the index at DATABASE_URL): the listing holds
    no PHI, a released object is de-identified by a worker that accepts it, purge deletes
    copies and records, by age."""
    data = tmp_path / "d"
    env = {**{k: v for k, v in os.environ.items() if k not in ("AMQP_URL", "S3_ENDPOINT")},
           "DATABASE_URL": database_url}
    sr = synth.make_sr()
    name, patient_id = str(sr.PatientName), str(sr.PatientID)
    broken = synth.make_ct_series(1, patient_index=1)[0]
    del broken.StudyInstanceUID

    async def quarantine_two() -> None:
        async with _system(_settings(database_url, data)) as system:
            ingest = Ingest(system.store, system.buckets, system.broker, system.index.index)
            await ingest.receive(_bytes(sr), "scp")
            assert (await ingest.receive(_bytes(broken), "scp")).quarantined
            await wait_until(_until(system, "quarantined_object", 2), 30, "two quarantined")
            await ingest.drain()

    asyncio.run(quarantine_two())
    listed = _anon(env, "quarantine", "--data-dir", str(data), "list", "--json")
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(e["stage"] for e in entries) == ["deidentify", "ingest"]
    assert all(set(e) == {"key", "stage", "reason_code", "reason", "date"} for e in entries)
    assert name not in listed.stdout and patient_id not in listed.stdout
    assert str(sr.SOPInstanceUID) not in listed.stdout
    plain = _anon(env, "quarantine", "--data-dir", str(data), "list")
    assert len(plain.stdout.splitlines()) == 2
    [report] = [e for e in entries if e["stage"] == "deidentify"]

    released = _anon(env, "quarantine", "--data-dir", str(data), "release", report["key"])
    assert released.returncode == 0, released.stderr
    assert f"released {report['key']} as released/{report['key']}" in released.stdout
    again = _anon(env, "quarantine", "--data-dir", str(data), "release", report["key"])
    assert again.returncode == 1 and "no quarantined object" in again.stderr
    assert not (data / "objects" / "quarantine" / report["key"]).exists()

    async def deidentify_released() -> None:
        settings = _settings(database_url, data, accept_structured_reports=True)
        async with _system(settings) as system:
            assert [e.key for e in await list_quarantined(system.index.index)] == [
                e["key"] for e in entries if e["stage"] == "ingest"]
            announced: set[str] = set()
            args = (system.store, system.buckets, system.broker, system.index.index, announced)
            assert await announce_released(*args) == 1
            assert await announce_released(*args) == 0  # once
            await wait_until(_until(system, "instance", 1), 30, "released SR de-identified")
            await asyncio.sleep(0.3)
            assert await system.store.list_keys(system.buckets.incoming) == []

    asyncio.run(deidentify_released())

    # anon deidentify's own quarantine folders (copies of rejected files) go too.
    old_run, new_run = data / "quarantine" / "20260101-000000", data / "quarantine" / "now"
    for folder in (old_run, new_run):
        folder.mkdir(parents=True)
        (folder / "rejected.csv").write_text("file,reason\n")
    os.utime(old_run, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    purged = _anon(env, "quarantine", "--data-dir", str(data), "purge", "--older-than", "1")
    assert purged.returncode == 0 and "purged 0 " in purged.stdout
    assert "and 1 quarantine folders" in purged.stdout
    assert not old_run.exists() and new_run.exists()

    async def age() -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(
                "UPDATE quarantined_object SET quarantined_at = now() - interval '3 days'")
        finally:
            await connection.close()

    asyncio.run(age())
    purged = _anon(env, "quarantine", "--data-dir", str(data), "purge", "--older-than", "1")
    assert purged.returncode == 0 and "purged 1 " in purged.stdout
    assert _anon(env, "quarantine", "--data-dir", str(data), "list").stdout == ""
    assert list((data / "objects" / "quarantine").rglob("*.dcm")) == []


def test_release_on_the_deployed_system_announces_on_rabbitmq(
    tmp_path: Path, database_url: str, amqp_url: str, s3_endpoint: S3Endpoint
) -> None:
    from tests.s3_server import _remove_buckets

    tag = unique_prefix()
    buckets = Buckets(f"in-{tag[5:13]}", f"de-{tag[5:13]}", f"qu-{tag[5:13]}", f"ex-{tag[5:13]}")
    settings = load_settings(
        database_url=database_url, data_dir=tmp_path, amqp_url=amqp_url,
        s3_endpoint=s3_endpoint.endpoint, s3_access_key=s3_endpoint.access_key,
        s3_secret_key=s3_endpoint.secret_key, s3_secure=s3_endpoint.secure, queue_prefix=tag,
        bucket_incoming=buckets.incoming, bucket_deidentified=buckets.deidentified,
        bucket_quarantine=buckets.quarantine, bucket_exports=buckets.exports)

    async def scenario() -> None:
        resources = await open_resources(settings)
        try:
            key = "ab/" + "ab" * 32 + ".0123456789ab.dcm"
            store, index = resources.store, resources.index.index
            await store.put(buckets.quarantine, key, _bytes(synth.make_sr()),
                            {"stage": "deidentify", "reason-code": "filtered", "reason": "SR"})
            await index.record_quarantined(key, "deidentify", "filtered", "SR")
            target = await release(store, buckets, index, resources.broker, key)
            assert target == "released/" + key
            assert await resources.broker.depth(ANONYMIZE) == 1
            assert await store.list_keys(buckets.incoming) == [target]
            assert await store.list_keys(buckets.quarantine) == []
            assert await list_quarantined(index) == []
            assert isinstance(resources.broker, RabbitBroker)
            await resources.broker.delete_topology()
        finally:
            await resources.close()

    try:
        asyncio.run(scenario())
    finally:
        _remove_buckets(s3_endpoint, buckets.all())
        cleanup = make_rabbit_broker(amqp_url, topology_from(settings), "cleanup")

        async def delete() -> None:
            await cleanup.connect()
            try:
                await cleanup.delete_topology()
            finally:
                await cleanup.close()

        asyncio.run(delete())


def test_a_release_can_accept_burned_in_annotation_for_that_object_only(
    tmp_path: Path, database_url: str
) -> None:
    first, second = synth.make_ct_series(2)
    for ds in (first, second):
        ds.BurnedInAnnotation = "YES"

    async def scenario() -> None:
        async with _system(_settings(database_url, tmp_path / "d")) as system:
            ingest = Ingest(system.store, system.buckets, system.broker, system.index.index)
            for ds in (first, second):
                await ingest.receive(_bytes(ds), "scp")
            await wait_until(_until(system, "quarantined_object", 2), 30, "both quarantined")
            index = system.index.index
            keys = {e.key: e for e in await list_quarantined(index)}
            accepted_key = object_key_of(keys, str(first.SOPInstanceUID))
            refused_key = object_key_of(keys, str(second.SOPInstanceUID))
            await release(system.store, system.buckets, index, None, accepted_key,
                          accept_burned_in_annotation=True)
            await release(system.store, system.buckets, index, None, refused_key)
            announced: set[str] = set()
            assert await announce_released(system.store, system.buckets, system.broker,
                                           index, announced) == 2
            await wait_until(_until(system, "instance", 1), 30, "the accepted one")
            await wait_until(_until(system, "quarantined_object", 1), 30, "the other again")
            async with system.index.pool.acquire() as connection:
                rows = await connection.fetch(
                    "SELECT original_sop_instance_uid, burned_in_annotation_accepted"
                    " FROM instance")
            assert [tuple(r) for r in rows] == [(str(first.SOPInstanceUID), True)]
            [again] = await list_quarantined(index)
            assert again.key == "released/" + refused_key
            await ingest.drain()

    asyncio.run(scenario())


def object_key_of(entries: dict[str, object], sop_instance_uid: str) -> str:
    import hashlib

    digest = hashlib.sha256(sop_instance_uid.encode()).hexdigest()
    [key] = [k for k in entries if digest in k]
    return key
