"""Composition root of scp-ingest: settings, backends, the Storage SCP (in this process,
or in ``SCP_PROCESSES`` receiver processes), the journal's relay, the health server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from services.scp_ingest.journal import Journal, Relay
from services.scp_ingest.receivers import ReceiverProcesses
from services.scp_ingest.scp import ScpOptions, StorageSCP, spool_limit
from shared.config import Settings
from shared.ingest import Ingest
from shared.observability.health import Check, start_health_server
from shared.observability.logging import log_fields
from shared.runtime import Resources, open_resources, service_main, wait_for_signal

log = logging.getLogger("scp-ingest")


def scp_options(settings: Settings) -> ScpOptions:
    """The SCP's admission limits and timeouts from the settings (with receiver processes,
    each takes its share of the association limit)."""
    return ScpOptions(
        allowed_aets=settings.allowed_aets,
        allowed_hosts=settings.allowed_hosts,
        max_associations=max(1, -(-settings.scp_max_associations // settings.scp_processes)),
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

    def __init__(self, settings: Settings, resources: Resources,
                 own_process: bool = False) -> None:
        self.settings = settings
        # Receivers in processes of their own: always with SCP_PROCESSES > 1, and where
        # this process also runs CPU-bound work (anon serve's workers) that would hold the
        # interpreter while a sender waits for its answer.
        self.separate = own_process or settings.scp_processes > 1
        self.journal = open_journal(settings)
        self.ingest = Ingest(resources.store, resources.buckets, resources.broker,
                             resources.index.index, max_object_bytes=settings.max_object_bytes)
        # What receivers in other processes commit is noticed by looking often.
        self.relay = Relay(self.journal, self.ingest,
                           poll_seconds=0.05 if self.separate else 1.0)
        self.scp: StorageSCP | None = None
        self.receivers: ReceiverProcesses | None = None

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
        if not self.separate:
            self.scp = StorageSCP(self.journal, settings.scp_ae_title, scp_options(settings))
            await self.scp.start(settings.scp_host, settings.scp_port)
        else:
            self.receivers = ReceiverProcesses(settings, settings.scp_processes)
            await self.receivers.start()
        log.info("listening", extra=log_fields(port=self.port, ae_title=settings.scp_ae_title,
                                                processes=settings.scp_processes))

    @property
    def port(self) -> int:
        if self.scp is not None:
            return self.scp.port
        return self.receivers.port if self.receivers is not None else 0

    def checks(self) -> dict[str, Check]:
        async def receivers() -> None:
            if self.receivers is not None and not self.receivers.alive():
                raise RuntimeError("a receiver process is not running")

        return {"receivers": receivers}

    async def stop(self) -> None:
        """Stop receiving (see :meth:`StorageSCP.stop`), give the relay up to
        ``SCP_STORE_TIMEOUT`` to drain the journal (what is left is relayed at the next
        start), then wait a little for the receipts' bookkeeping."""
        if self.scp is not None:
            await self.scp.stop()
        if self.receivers is not None:
            await self.receivers.stop()
        deadline = asyncio.get_running_loop().time() + self.settings.scp_store_timeout
        while self.journal.ready_entries() and asyncio.get_running_loop().time() < deadline:
            self.journal.committed.set()
            await asyncio.sleep(0.05)
        await self.relay.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ingest.drain(), 5.0)


async def start_scp(settings: Settings, resources: Resources,
                    own_process: bool = False) -> ScpService:
    """Start the SCP (here, or in receiver processes) and the relay on the running loop."""
    service = ScpService(settings, resources, own_process)
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
