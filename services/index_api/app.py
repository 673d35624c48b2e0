"""Composition root of index-api: settings, backends, the command client, and the API (with
``/livez``, ``/readyz`` and ``/metrics``) on API_PORT. ``anon serve`` builds the same API
over its own backends with :func:`api_context`."""

from __future__ import annotations

import logging

from services.index_api.api import start_api
from services.index_api.context import ApiContext, RateLimiter
from shared.commands.client import CommandClient, command_client
from shared.config import Settings
from shared.messaging import Broker
from shared.observability.logging import log_fields
from shared.runtime import Resources, open_resources, service_main, wait_for_signal

log = logging.getLogger("index-api")


def api_context(settings: Settings, resources: Resources, commands: CommandClient,
                broker: Broker | None, scp_port: int | None = None) -> ApiContext:
    """``broker``: where a released quarantined object is announced (None: the embedded
    system notices it by itself)."""
    return ApiContext(
        settings=settings, pool=resources.index.pool, site=resources.index.site,
        store=resources.store, buckets=resources.buckets, broker=broker, commands=commands,
        limiter=RateLimiter(settings.api_phi_reads_per_minute, settings.api_phi_burst),
        scp_port=scp_port)


async def run(settings: Settings) -> None:
    resources = await open_resources(settings)
    try:
        ctx = api_context(settings, resources, command_client(settings), resources.broker)
        runner, port = await start_api(ctx, resources.checks())
        log.info("ready", extra=log_fields(port=port))
        await wait_for_signal()
        await runner.cleanup()
    finally:
        await resources.close()


def main() -> None:
    service_main("index-api", run)
