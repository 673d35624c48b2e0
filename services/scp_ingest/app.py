"""Composition root of scp-ingest: settings, backends, the Storage SCP, health server."""

from __future__ import annotations

import asyncio
import logging
import tempfile

from services.scp_ingest.scp import (
    ScpOptions,
    StorageSCP,
    remove_stale_spool_files,
    spool_limit,
)
from shared.config import Settings
from shared.ingest import Ingest
from shared.observability.health import start_health_server
from shared.observability.logging import log_fields
from shared.runtime import Resources, open_resources, service_main, wait_for_signal

log = logging.getLogger("scp-ingest")


def scp_options(settings: Settings) -> ScpOptions:
    """The SCP's admission limits and timeouts from the settings."""
    return ScpOptions(
        allowed_aets=settings.allowed_aets,
        allowed_hosts=settings.allowed_hosts,
        max_associations=settings.scp_max_associations,
        max_pdu_size=settings.scp_max_pdu_size,
        acse_timeout=settings.scp_acse_timeout,
        dimse_timeout=settings.scp_dimse_timeout,
        network_timeout=settings.scp_network_timeout,
        store_timeout=settings.scp_store_timeout,
        max_spooled_bytes=spool_limit(settings.max_object_bytes),
    )


def start_scp(settings: Settings, resources: Resources) -> StorageSCP:
    """Start the SCP on the running loop (received objects are spooled in
    ``SCP_SPOOL_DIR`` or the system's temporary folder)."""
    if settings.scp_spool_dir is not None:
        settings.scp_spool_dir.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(settings.scp_spool_dir)
        stale = remove_stale_spool_files(settings.scp_spool_dir)
        if stale:
            log.warning("half-received data sets of a previous run deleted",
                        extra=log_fields(count=stale))
    ingest = Ingest(resources.store, resources.buckets, resources.broker, resources.index.index,
                    max_object_bytes=settings.max_object_bytes)
    scp = StorageSCP(ingest, asyncio.get_running_loop(), settings.scp_ae_title,
                     scp_options(settings))
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
