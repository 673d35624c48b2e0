"""``anon serve``: the whole system in one process on embedded defaults.

In-process queues, objects in ``DATA_DIR/objects``, the embedded PostgreSQL (or
``DATABASE_URL``), the Storage SCP, the anonymizer workers, the relinker, the qr-fetcher
and the exporter, and the index API on ``API_PORT`` with the health endpoints (also on
``HEALTH_PORT`` when that differs); the API calls the services in the process, and commands
(``anon query``, ``retrieve``, ``export``) arrive on the loopback endpoint of
:mod:`shared.commands.local`. The queues live in the process, so at start every received
object that was neither de-identified nor quarantined (answered Success before a stop or a
crash), and every unfinished item of a retrieve or export job, is announced again;
received objects past their retention are deleted at start and hourly; objects released
from quarantine are announced within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.anonymizer_worker.worker import AnonymizerWorker
from services.exporter.app import start_exporter, stop_exporter
from services.index_api.api import start_api
from services.index_api.app import api_context
from services.rt_relinker.relinker import RtRelinker
from services.scp_ingest.app import start_scp
from shared.commands.client import CommandClient, InProcessTransport
from shared.commands.exporting import export_registry
from shared.commands.local import LocalCommandServer
from shared.config import Settings
from shared.messaging.topology import ANONYMIZE, RELINK, RETRIEVE
from shared.observability.health import start_health_server
from shared.qr.fetcher import QrFetcher
from shared.quarantine import RELEASED_PREFIX, watch_released
from shared.recovery import announce_unprocessed, announce_unrelinked, sweep_periodically
from shared.runtime import open_resources, pseudonymizer_from, wait_for_signal

log = logging.getLogger("serve")


async def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM."""
    embedded = settings.model_copy(update={"amqp_url": None, "s3_endpoint": None})
    resources = await open_resources(embedded)
    try:
        worker = AnonymizerWorker(resources.store, resources.buckets, resources.broker,
                                  pseudonymizer_from(embedded, resources),
                                  keep_received=embedded.incoming_retention_days > 0)
        consumer = await resources.broker.consume(ANONYMIZE, worker.handle,
                                                  prefetch=embedded.worker_concurrency)
        relinker = RtRelinker(resources.store, resources.index.pool,
                              resources.buckets.deidentified)
        relinking = await resources.broker.consume(RELINK, relinker.handle,
                                                   prefetch=embedded.worker_concurrency)
        backlog = await announce_unprocessed(resources.store, resources.buckets,
                                             resources.broker, resources.index.index)
        await announce_unrelinked(resources.store, resources.buckets, resources.broker,
                                  resources.index.index)
        sweeping = asyncio.create_task(sweep_periodically(
            resources.store, resources.buckets, resources.index.index,
            embedded.incoming_retention_days))
        # Objects released from quarantine by `anon quarantine release` while running.
        released = {k for k in backlog.unprocessed if k.startswith(RELEASED_PREFIX)}
        watching = asyncio.create_task(watch_released(
            resources.store, resources.buckets, resources.broker, resources.index.index,
            released))
        scp = await start_scp(embedded, resources)
        fetcher = QrFetcher(embedded, resources)
        retrieving = await resources.broker.consume(RETRIEVE, fetcher.handle, prefetch=2)
        await fetcher.announce_open_items()
        exporter, exporting, sweeper = await start_exporter(embedded, resources,
                                                            announce_open=True)
        registries = [fetcher.registry(), export_registry(exporter)]
        commands = LocalCommandServer(embedded.data_dir, registries)
        await commands.start()
        # Released quarantined objects are announced by `watching`, so the API passes none.
        api, api_port = await start_api(
            api_context(embedded, resources, CommandClient(InProcessTransport(registries)),
                        None, scp.port),
            {**resources.checks(), **scp.checks()})
        health = (await start_health_server(embedded.health_host, embedded.health_port,
                                            {**resources.checks(), **scp.checks()})
                  if embedded.health_port != embedded.api_port else None)
        print(f"listening for C-STORE as {embedded.scp_ae_title} on port {scp.port}; "
              f"SITEID {resources.index.site.site_id}; data in {embedded.data_dir}; "
              f"index API on http://localhost:{api_port}/ (anon token create for a token); "
              f"health on port {embedded.health_port if health else api_port}; "
              f"{len(backlog.unprocessed)} received objects announced again", flush=True)
        await wait_for_signal()
        for task in (sweeping, watching):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await commands.close()
        await retrieving.cancel()
        await stop_exporter(exporting, sweeper)
        await scp.stop()
        await consumer.cancel()
        await relinking.cancel()
        await api.cleanup()
        if health is not None:
            await health.cleanup()
    finally:
        await resources.close()
