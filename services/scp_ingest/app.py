"""Composition root of scp-ingest: settings, backends, the Storage SCP in ``SCP_PROCESSES``
receiver processes, the journal's relay, the health server.

The receivers run in processes of their own even when there is one: what this process
does besides (the relay's uploads and announcements, and in ``anon serve`` the workers'
de-identification) would otherwise hold the interpreter while a sender waits for its
answer. Measured on 1,000 small files over one association: 22.8 s with the relay in the
receiving process, against storescp's 2.9 s in the same run (benchmarks.ingest)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from services.scp_ingest.journal import Journal, Relay
from services.scp_ingest.receivers import ReceiverProcesses
from services.scp_ingest.scp import ScpOptions, spool_limit
from shared.config import Settings
from shared.ingest import Ingest
from shared.observability.health import Check, start_health_server
from shared.observability.logging import log_fields
from shared.runtime import Resources, open_resources, service_main, wait_for_signal

log = logging.getLogger("scp-ingest")


def scp_options(settings: Settings) -> ScpOptions:
    """The SCP's admission limits and timeouts from the settings (the association limit
    holds for the receiver processes together: :class:`~services.scp_ingest.scp.Places`)."""
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
        max_object_bytes=settings.max_object_bytes,
    )


def journal_folder(settings: Settings) -> Path:
    return settings.scp_spool_dir or settings.data_dir / "scp-journal"


def open_journal(settings: Settings) -> Journal:
    return Journal(journal_folder(settings), settings.scp_journal_min_free_bytes)


class ScpService:
    """The running Storage SCP and the relay of its journal."""

    def __init__(self, settings: Settings, resources: Resources) -> None:
        self.settings = settings
        self.journal = open_journal(settings)
        self.ingest = Ingest(resources.store, resources.buckets, resources.broker,
                             resources.index.index, max_object_bytes=settings.max_object_bytes)
        # What the receiver processes commit is noticed by looking often.
        self.relay = Relay(self.journal, self.ingest, poll_seconds=0.05,
                           quiet_seconds=settings.scp_relay_quiet_seconds,
                           max_deferred=settings.scp_relay_max_deferred)
        self.receivers = ReceiverProcesses(settings, settings.scp_processes)

    async def start(self) -> None:
        stale = self.journal.remove_partial()
        if stale:
            log.warning("half-received data sets of a previous run deleted",
                        extra=log_fields(count=stale))
        waiting = len(self.journal.ready_entries())
        if waiting:
            log.info("journal entries of a previous run to relay",
                     extra=log_fields(count=waiting))
        self.relay.start()
        settings = self.settings
        await self.receivers.start()
        log.info("listening", extra=log_fields(port=self.port, ae_title=settings.scp_ae_title,
                                                processes=settings.scp_processes))

    @property
    def port(self) -> int:
        return self.receivers.port

    def checks(self) -> dict[str, Check]:
        async def receivers() -> None:
            if not self.receivers.alive():
                raise RuntimeError("a receiver process is not running")

        return {"receivers": receivers}

    async def stop(self) -> None:
        """Stop receiving (see :meth:`StorageSCP.stop`), give the relay up to
        ``SCP_STORE_TIMEOUT`` to drain the journal (what is left is relayed at the next
        start), then wait a little for the receipts' bookkeeping."""
        await self.receivers.stop()
        deadline = asyncio.get_running_loop().time() + self.settings.scp_store_timeout
        while self.journal.ready_entries() and asyncio.get_running_loop().time() < deadline:
            self.journal.committed.set()
            await asyncio.sleep(0.05)
        await self.relay.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ingest.drain(), 5.0)


async def start_scp(settings: Settings, resources: Resources) -> ScpService:
    """Start the receiver processes and, on the running loop, the relay."""
    service = ScpService(settings, resources)
    await service.start()
    return service


async def run(settings: Settings) -> None:
    resources = await open_resources(settings)
    try:
        scp = await start_scp(settings, resources)
        health = await start_health_server(settings.health_host, settings.health_port,
                                           {**resources.checks(), **scp.checks()})
        await wait_for_signal()
        await scp.stop()
        await health.cleanup()
    finally:
        await resources.close()


def main() -> None:
    service_main("scp-ingest", run)
