"""Composition root of anonymizer-worker: settings, backends, consumers, health server."""

from __future__ import annotations

import asyncio
import logging

from services.anonymizer_worker.worker import AnonymizerWorker
from shared.config import Settings
from shared.messaging.topology import ANONYMIZE
from shared.observability.health import start_health_server
from shared.observability.logging import log_fields
from shared.recovery import sweep_periodically
from shared.runtime import open_resources, pseudonymizer_from, service_main, wait_for_signal

log = logging.getLogger("anonymizer-worker")


async def run(settings: Settings) -> None:
    resources = await open_resources(settings)
    try:
        worker = AnonymizerWorker(resources.store, resources.buckets, resources.broker,
                                  pseudonymizer_from(settings, resources),
                                  keep_received=settings.incoming_retention_days > 0)
        consumer = await resources.broker.consume(ANONYMIZE, worker.handle,
                                                  prefetch=settings.worker_concurrency)
        health = await start_health_server(settings.health_host, settings.health_port,
                                           resources.checks())
        log.info("consuming", extra=log_fields(concurrency=settings.worker_concurrency))
        # Received objects past INCOMING_RETENTION_DAYS (or left by a crash) are deleted.
        sweeping = asyncio.create_task(sweep_periodically(
            resources.store, resources.buckets, resources.index.index,
            settings.incoming_retention_days))
        await wait_for_signal()
        sweeping.cancel()
        await consumer.cancel()
        await health.cleanup()
    finally:
        await resources.close()


def main() -> None:
    service_main("anonymizer-worker", run)
