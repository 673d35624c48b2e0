"""Composition root of the exporter: settings, backends, the export queue's consumer, the
sweep of waiting items, health server.

One item (one patient, one association at a time) is worked per message, at most
``PREFETCH`` at once, so the destination sees few associations from us. ``anon serve``
runs the same pieces in its own process through :func:`start_exporter` and
:func:`stop_exporter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from shared.commands.exporting import export_registry
from shared.commands.rabbit import RabbitCommandServer
from shared.config import Settings
from shared.export import Destination, Exporter
from shared.index import jobs
from shared.messaging import Consumer
from shared.messaging.topology import EXPORT
from shared.observability.health import start_health_server
from shared.observability.logging import log_fields
from shared.runtime import Resources, open_resources, service_main, wait_for_signal

log = logging.getLogger("exporter")

PREFETCH = 2


async def start_exporter(
    settings: Settings, resources: Resources, *, announce_open: bool = False
) -> tuple[Exporter, Consumer, asyncio.Task[None]]:
    """Start exporting in this process: the exporter, its consumer of the export queue and
    the task sweeping waiting items. ``announce_open`` announces every unfinished export
    item again first (in-process queues lost their messages at the last stop; harmless
    otherwise, as handling an item twice changes nothing). Stop with :func:`stop_exporter`."""
    exporter = Exporter(settings, resources)
    destination = Destination.from_settings(settings)
    # The index's switch (an administrator's), else EXPORT_ENABLED.
    enabled = await exporter.enabled()
    if not enabled:
        log.warning("export is switched off: requests are refused, and requested items "
                    "wait until it is switched on")
    elif destination is None:
        log.warning("no export destination (EXPORT_HOST unset): requests are refused")
    if announce_open:
        for job, position in await jobs.open_items(resources.index.pool, jobs.EXPORT):
            await resources.broker.publish(EXPORT, {"job": job, "position": position},
                                           correlation_id=f"export-{job}-{position}")
    consumer = await resources.broker.consume(EXPORT, exporter.handle, prefetch=PREFETCH)
    sweeper = asyncio.create_task(exporter.run_sweeper(), name="export-sweeper")
    log.info("exporting", extra=log_fields(
        destination=destination.describe() if destination else None,
        enabled=enabled))
    return exporter, consumer, sweeper


async def stop_exporter(consumer: Consumer, sweeper: asyncio.Task[None]) -> None:
    """Stop the sweep, then the consumer (an item being sent gets the broker's grace
    period, then stops after its C-STORE in progress and resumes at the next start)."""
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    await consumer.cancel()


async def run(settings: Settings) -> None:
    resources = await open_resources(settings)
    try:
        exporter, consumer, sweeper = await start_exporter(settings, resources)
        assert settings.amqp_url is not None
        commands = RabbitCommandServer(settings.amqp_url, settings.queue_prefix,
                                       export_registry(exporter))
        await commands.start()
        health = await start_health_server(settings.health_host, settings.health_port,
                                           resources.checks())
        await wait_for_signal()
        await commands.close()
        await stop_exporter(consumer, sweeper)
        await health.cleanup()
    finally:
        await resources.close()


def main() -> None:
    service_main("exporter", run)
