"""Composition root of qr-fetcher: settings, backends, the command server, the retrieve
queue's consumer, the health server."""

from __future__ import annotations

import logging

from shared.commands.rabbit import RabbitCommandServer
from shared.config import Settings
from shared.messaging.topology import RETRIEVE
from shared.observability.health import start_health_server
from shared.observability.logging import log_fields
from shared.qr.fetcher import QrFetcher
from shared.runtime import open_resources, service_main, wait_for_signal

log = logging.getLogger("qr-fetcher")

# Studies retrieved at once by one process: each holds an association with the PACS.
RETRIEVE_CONCURRENCY = 2


async def run(settings: Settings) -> None:
    assert settings.amqp_url is not None
    resources = await open_resources(settings)
    try:
        fetcher = QrFetcher(settings, resources)
        if fetcher.peer is None:
            log.warning("no PACS configured (PACS_HOST): queries and retrieves are refused")
        commands = RabbitCommandServer(settings.amqp_url, settings.queue_prefix,
                                       fetcher.registry())
        await commands.start()
        consumer = await resources.broker.consume(RETRIEVE, fetcher.handle,
                                                  prefetch=RETRIEVE_CONCURRENCY)
        health = await start_health_server(settings.health_host, settings.health_port,
                                           resources.checks())
        log.info("ready", extra=log_fields(pacs=fetcher.peer.describe() if fetcher.peer else "",
                                           method=settings.qr_retrieve))
        await wait_for_signal()
        await commands.close()
        await consumer.cancel()
        await health.cleanup()
    finally:
        await resources.close()


def main() -> None:
    service_main("qr-fetcher", run)
