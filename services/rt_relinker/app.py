"""Composition root of rt-relinker: settings, backends, consumer, health server."""

from __future__ import annotations

from services.rt_relinker.relinker import RtRelinker
from shared.config import Settings
from shared.messaging.topology import RELINK
from shared.observability.health import start_health_server
from shared.runtime import open_resources, service_main, wait_for_signal


async def run(settings: Settings) -> None:
    resources = await open_resources(settings)
    try:
        relinker = RtRelinker(resources.store, resources.index.pool,
                              resources.buckets.deidentified)
        consumer = await resources.broker.consume(RELINK, relinker.handle,
                                                  prefetch=settings.worker_concurrency)
        health = await start_health_server(settings.health_host, settings.health_port,
                                           resources.checks())
        await wait_for_signal()
        await consumer.cancel()
        await health.cleanup()
    finally:
        await resources.close()


def main() -> None:
    service_main("rt-relinker", run)
