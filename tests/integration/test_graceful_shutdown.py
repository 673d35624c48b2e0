"""SIGTERM to an anonymizer-worker process holding messages, on real RabbitMQ, PostgreSQL
and S3: what it handles finishes and is acknowledged; what cannot finish within
SHUTDOWN_GRACE_SECONDS goes back to the queue, undamaged and not dead-lettered; the process
exits 0. This is what Kubernetes does to a pod it scales in or moves (docs/operations.md,
graceful shutdown)."""

from __future__ import annotations

import asyncio
import io
import signal
import time

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from shared.ingest import object_key
from shared.messaging import RabbitBroker
from shared.messaging.topology import ANONYMIZE
from shared.storage import S3Store
from tests import synth
from tests.pipeline_support import Pipeline, ServiceProcess

pytestmark = pytest.mark.integration


def _slow_objects(count: int, references: int) -> list[tuple[str, bytes]]:
    """CT objects whose long Referenced Image Sequence makes each take the engine a while
    (about half a second for 20,000 items), so a SIGTERM finds them being handled."""
    objects = []
    for ds in synth.make_ct_series(count, patient_index=7):
        items = []
        for n in range(references):
            item = Dataset()
            item.ReferencedSOPClassUID = synth.CT_IMAGE_STORAGE
            item.ReferencedSOPInstanceUID = synth.uid_for(f"ref-{ds.SOPInstanceUID}", n)
            items.append(item)
        ds.ReferencedImageSequence = Sequence(items)
        buffer = io.BytesIO()
        synth.write(ds, buffer)
        objects.append((object_key(ds.SOPInstanceUID), buffer.getvalue()))
    return objects


def _store(pipeline: Pipeline, objects: list[tuple[str, bytes]]) -> None:
    """Put the objects in the incoming bucket, as the Storage SCP's relay does."""

    async def put() -> None:
        s3 = pipeline.s3
        store = S3Store(s3.endpoint, s3.access_key, s3.secret_key, s3.secure)
        try:
            await store.ensure_buckets(pipeline.buckets.all())
            for key, data in objects:
                await store.put(pipeline.buckets.incoming, key, data)
        finally:
            await store.close()

    asyncio.run(put())


def _announce(pipeline: Pipeline, keys: list[str]) -> None:
    """Announce the objects on the anonymize queue, as the relay does."""

    async def publish() -> None:
        broker = RabbitBroker(pipeline.amqp_url, pipeline.topology)
        await broker.connect()
        try:
            for key in keys:
                await broker.publish(ANONYMIZE, {"bucket": pipeline.buckets.incoming,
                                                 "key": key, "source": "test"},
                                     correlation_id=key[-16:])
        finally:
            await broker.close()

    asyncio.run(publish())


def _ready(pipeline: Pipeline) -> int:
    """Messages ready in the anonymize queue (none is unacknowledged: no consumer runs)."""

    async def depth() -> int:
        broker = RabbitBroker(pipeline.amqp_url, pipeline.topology)
        await broker.connect()
        try:
            return await broker.depth(ANONYMIZE)
        finally:
            await broker.close()

    return asyncio.run(depth())


def _terminate(worker: ServiceProcess, timeout: float) -> float:
    """SIGTERM, then the seconds until the process exited (it must exit with 0)."""
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    code = worker.process.wait(timeout=timeout)
    elapsed = time.monotonic() - started
    output = worker.log.read_text()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    return elapsed


def _settled_ready(pipeline: Pipeline, expected: int, timeout: float = 10) -> int:
    """The ready count once the broker has put back what the stopped worker held."""
    deadline = time.monotonic() + timeout
    ready = _ready(pipeline)
    while ready != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        ready = _ready(pipeline)
    return ready


def test_sigterm_lets_objects_being_handled_finish_and_returns_the_rest(
    pipeline: Pipeline,
) -> None:
    objects = _slow_objects(10, references=20_000)
    _store(pipeline, objects)
    _announce(pipeline, [key for key, _ in objects])
    worker = pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="2",
                            SHUTDOWN_GRACE_SECONDS="60")
    pipeline.wait_for(lambda c: c["deidentified"] >= 2)
    # The first two, started together, end together; the next two are delivered only once
    # those are acknowledged. A moment later they are being handled (each takes seconds).
    time.sleep(0.5)
    at_signal = pipeline.counts()["deidentified"]
    assert at_signal < len(objects)
    _terminate(worker, timeout=60)
    after = pipeline.counts()
    # The two objects in flight at the signal were finished, recorded and acknowledged...
    assert after["deidentified"] > at_signal
    # ... and nothing recorded is still in the queue, nothing unrecorded was acknowledged.
    assert _settled_ready(pipeline, len(objects) - after["deidentified"]) == (
        len(objects) - after["deidentified"])
    assert pipeline.dead_letters() == 0

    pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="2")
    done = pipeline.wait_for(lambda c: c["deidentified"] >= len(objects))
    time.sleep(1)
    done = pipeline.counts()
    assert done["deidentified"] == done["unique"] == len(objects)


def test_messages_held_past_the_grace_go_back_to_the_queue(
    pipeline: Pipeline, s3_control: object
) -> None:
    """With the object store down the worker's handlers wait for it, holding their messages;
    at SIGTERM they get SHUTDOWN_GRACE_SECONDS, then their messages are returned (not
    counted as failures, not dead-lettered) and the process exits well before the default
    grace of 30 s would have passed."""
    objects = _slow_objects(6, references=10)
    _store(pipeline, objects)
    worker = pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="4",
                            SHUTDOWN_GRACE_SECONDS="2")
    s3_control.stop()  # type: ignore[attr-defined]
    try:
        _announce(pipeline, [key for key, _ in objects])
        time.sleep(3)  # the worker takes four and waits for the store with them
        assert pipeline.counts()["deidentified"] == 0
        elapsed = _terminate(worker, timeout=60)
        assert elapsed < 20, f"the worker took {elapsed:.1f} s to stop with a grace of 2 s"
        assert _settled_ready(pipeline, len(objects)) == len(objects)
        assert pipeline.dead_letters() == 0
    finally:
        s3_control.start()  # type: ignore[attr-defined]

    pipeline.start("anonymizer_worker")
    done = pipeline.wait_for(lambda c: c["deidentified"] >= len(objects))
    time.sleep(1)
    done = pipeline.counts()
    assert done["deidentified"] == done["unique"] == len(objects)
    assert pipeline.dead_letters() == 0
