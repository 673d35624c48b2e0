"""An object-store outage while a backlog waits: the deployed worker pauses instead of
spending its deliveries, and every object is de-identified once the store is back."""

from __future__ import annotations

import asyncio
import io
import os
import time

import pytest

from shared.ingest import object_key
from shared.messaging import ANONYMIZE, RabbitBroker
from shared.storage import S3Store
from tests import synth
from tests.pipeline_support import Pipeline

pytestmark = pytest.mark.integration

# The outage lasts far longer than the deliveries allow without pausing (three deliveries
# 0.2 and 0.4 s apart); OUTAGE_SECONDS measures longer ones.
OUTAGE = float(os.environ.get("OUTAGE_SECONDS", "15"))


def test_an_s3_outage_dead_letters_nothing_and_loses_nothing(
    pipeline: Pipeline, s3_control: object
) -> None:
    total = 20
    objects = {}
    for ds in synth.make_ct_series(total):
        buffer = io.BytesIO()
        synth.write(ds, buffer)
        objects[object_key(str(ds.SOPInstanceUID))] = buffer.getvalue()

    async def store_all() -> None:
        s3 = pipeline.s3
        store = S3Store(s3.endpoint, s3.access_key, s3.secret_key, s3.secure)
        try:
            await store.ensure_buckets(pipeline.buckets.all())
            for key, data in objects.items():
                await store.put(pipeline.buckets.incoming, key, data)
        finally:
            await store.close()

    async def announce_all() -> None:
        broker = RabbitBroker(pipeline.amqp_url, pipeline.topology)
        await broker.connect()
        try:
            for key in objects:
                await broker.publish(ANONYMIZE, {"bucket": pipeline.buckets.incoming,
                                                 "key": key, "source": "import"}, key[3:19])
        finally:
            await broker.close()

    asyncio.run(store_all())
    worker = pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="4")
    s3_control.stop()  # type: ignore[attr-defined]
    try:
        asyncio.run(announce_all())
        time.sleep(OUTAGE)
        assert pipeline.dead_letters() == 0
        assert pipeline.counts()["deidentified"] == 0
    finally:
        s3_control.start()  # type: ignore[attr-defined]
    started = time.monotonic()
    counts = pipeline.wait_for(lambda c: c["deidentified"] >= total, timeout=120)
    resumed = time.monotonic() - started
    assert counts["deidentified"] == total and counts["quarantined"] == 0
    assert pipeline.dead_letters() == 0
    assert len(pipeline.keys(pipeline.buckets.deidentified)) == total
    log = worker.log.read_text()
    assert "consumers paused" in log and "consumers resumed" in log
    failures = log.count("during an outage")
    print(f"outage {OUTAGE:g} s: {failures} handler failures during it, none counted; "
          f"all {total} de-identified {resumed:.1f} s after the store came back")
