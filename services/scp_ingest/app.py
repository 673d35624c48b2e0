"""Composition root of scp-ingest: settings, backends, the Storage SCP, health server."""

from __future__ import annotations

import asyncio
import logging
import tempfile

from services.scp_ingest.scp import StorageSCP
from shared.config import Settings
from shared.ingest import Ingest
from shared.observability.health import start_health_server
from shared.observability.logging import log_fields
from shared.runtime import Resources, open_resources, service_main, wait_for_signal

log = logging.getLogger("scp-ingest")


def start_scp(settings: Settings, resources: Resources) -> StorageSCP:
    """Start the SCP on the running loop (received objects are spooled in
    ``SCP_SPOOL_DIR`` or the system's temporary folder)."""
    if settings.scp_spool_dir is not None:
        settings.scp_spool_dir.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(settings.scp_spool_dir)
    ingest = Ingest(resources.store, resources.buckets, resources.broker, resources.index.index)
    scp = StorageSCP(ingest, asyncio.get_running_loop(), settings.scp_ae_title,
                     settings.allowed_aets, settings.allowed_hosts)
    scp.start(settings.scp_host, settings.scp_port)
    log.info("listening", extra=log_fields(port=scp.port, ae_title=settings.scp_ae_title))
    return scp


async def run(settings: Settings) -> None:
    resources = await open_resources(settings)
    try:
        scp = start_scp(settings, resources)
        health = await start_health_server(settings.health_host, settings.health_port,
                                           resources.checks())
        await wait_for_signal()
        await asyncio.to_thread(scp.stop)
        await scp.ingest.drain()
        await health.cleanup()
    finally:
        await resources.close()


def main() -> None:
    service_main("scp-ingest", run)
