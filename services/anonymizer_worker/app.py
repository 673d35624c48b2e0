"""Composition root of anonymizer-worker: settings, backends, consumers, health server."""

from __future__ import annotations

import asyncio
import logging
import sys

from services.anonymizer_worker.worker import AnonymizerWorker
from shared.config import ConfigurationError, Settings, load_settings, require
from shared.messaging.topology import ANONYMIZE
from shared.observability.health import start_health_server
from shared.observability.logging import configure_logging, log_fields
from shared.runtime import open_resources, pseudonymizer_from, wait_for_signal

log = logging.getLogger("anonymizer-worker")


async def run(settings: Settings) -> None:
    resources = await open_resources(settings)
    try:
        worker = AnonymizerWorker(resources.store, resources.buckets, resources.broker,
                                  pseudonymizer_from(settings, resources))
        consumer = await resources.broker.consume(ANONYMIZE, worker.handle,
                                                  prefetch=settings.worker_concurrency)
        health = await start_health_server(settings.health_host, settings.health_port,
                                           resources.checks())
        log.info("consuming", extra=log_fields(concurrency=settings.worker_concurrency))
        await wait_for_signal()
        await consumer.cancel()
        await health.cleanup()
    finally:
        await resources.close()


def main() -> None:
    try:
        settings = load_settings()
        require(settings, "database_url", "amqp_url", "s3_endpoint")
    except ConfigurationError as exc:
        sys.exit(f"anonymizer-worker: {exc}")
    configure_logging("anonymizer-worker", settings.log_level)
    asyncio.run(run(settings))
