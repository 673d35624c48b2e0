"""An object-store outage while a backlog waits: the deployed worker pauses instead of
spending its deliveries, and every object is de-identified once the store is back."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.ingest import object_key
from shared.messaging import ANONYMIZE, RabbitBroker
from shared.storage import S3Store
from tests import synth
from tests.pipeline_support import Pipeline
from tests.s3_server import free_port

pytestmark = pytest.mark.integration

# The outage lasts far longer than the deliveries allow without pausing (three deliveries
# 0.2 and 0.4 s apart); OUTAGE_SECONDS measures longer ones.
OUTAGE = float(os.environ.get("OUTAGE_SECONDS", "15"))


class TcpProxy:
    """A TCP forwarder on a port of its own (in a thread): :meth:`stop` refuses new
    connections and cuts the open ones, as a database outage does; :meth:`start` again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._open.update((writer, upstream_writer))
        await asyncio.gather(self._pipe(reader, upstream_writer),
                             self._pipe(upstream_reader, writer))
        self._open.difference_update((writer, upstream_writer))

    def start(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        self._call(listen())

    def stop(self) -> None:
        async def cut() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._open):
                writer.close()
            self._open.clear()

        self._call(cut())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _objects(total: int) -> dict[str, bytes]:
    objects = {}
    for ds in synth.make_ct_series(total):
        buffer = io.BytesIO()
        synth.write(ds, buffer)
        objects[object_key(str(ds.SOPInstanceUID))] = buffer.getvalue()
    return objects


def _store_and_announce(
    pipeline: Pipeline, objects: dict[str, bytes]
) -> tuple[Callable[[], None], Callable[[], None]]:
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

    return (lambda: asyncio.run(store_all())), (lambda: asyncio.run(announce_all()))


def test_a_postgresql_outage_dead_letters_nothing_and_loses_nothing(pipeline: Pipeline) -> None:
    """The worker reaches the index through a proxy that is cut for the outage."""
    total = 20
    objects = _objects(total)
    store_all, announce_all = _store_and_announce(pipeline, objects)
    parts = urlsplit(pipeline.database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.start()
    try:
        proxied = parts._replace(netloc=parts.netloc.replace(
            f"{parts.hostname}:{parts.port or 5432}", f"127.0.0.1:{proxy.port}")).geturl()
        assert str(proxy.port) in proxied
        store_all()
        worker = pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="4",
                                DATABASE_URL=proxied)
        proxy.stop()
        announce_all()
        time.sleep(OUTAGE)
        assert pipeline.dead_letters() == 0
        assert pipeline.counts()["deidentified"] == 0
        proxy.start()
        counts = pipeline.wait_for(lambda c: c["deidentified"] >= total, timeout=120)
        assert counts["deidentified"] == total and counts["quarantined"] == 0
        assert pipeline.dead_letters() == 0
        log = worker.log.read_text()
        assert "a dependency is down" in log and "database" in log
        assert "consumers resumed" in log
    finally:
        proxy.close()


def test_an_s3_outage_dead_letters_nothing_and_loses_nothing(
    pipeline: Pipeline, s3_control: object
) -> None:
    total = 20
    store_all, announce_all = _store_and_announce(pipeline, _objects(total))
    store_all()
    worker = pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="4")
    s3_control.stop()  # type: ignore[attr-defined]
    try:
        announce_all()
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
