"""Receiver processes: ``SCP_PROCESSES`` Storage SCPs on one port, one per core.

Each receiver process listens on ``SCP_HOST:SCP_PORT`` with SO_REUSEPORT (the kernel
spreads new connections over them) and writes what it receives into the one journal
folder; it needs no backend, so it opens none. The process that started them relays
the journal (:class:`services.scp_ingest.journal.Relay`): in ``anon serve`` it is the
process holding the in-process queues. A receiver dies with its parent (a kill -9 of the
parent leaves no receiver answering Success with nobody relaying), and a receiver that
dies is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import signal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from shared.config import Settings
from shared.observability.logging import configure_logging, log_fields

log = logging.getLogger("scp-ingest")

_PR_SET_PDEATHSIG = 1
START_TIMEOUT = 30.0


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def receiver_main(settings: Settings, slot: int, ready: Connection) -> None:
    """The body of one receiver process."""
    _die_with_parent()
    configure_logging(f"scp-ingest-receiver-{slot}", settings.log_level)
    from shared.runtime import run_loop

    run_loop(_receive(settings, ready))


async def _receive(settings: Settings, ready: Connection) -> None:
    from services.scp_ingest.app import open_journal, scp_options
    from services.scp_ingest.scp import StorageSCP
    from shared.runtime import wait_for_signal

    journal = open_journal(settings)
    options = scp_options(settings)
    scp = StorageSCP(journal, settings.scp_ae_title, options)
    await scp.start(settings.scp_host, settings.scp_port, reuse_port=True)
    ready.send(scp.port)
    ready.close()
    await wait_for_signal()
    await scp.stop()


class ReceiverProcesses:
    """Starts, watches and stops the receiver processes."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self._context = multiprocessing.get_context("spawn")
        self._processes: dict[int, BaseProcess] = {}
        self._watching: asyncio.Task[None] | None = None
        self._stopping = False
        self.port = settings.scp_port

    async def start(self) -> None:
        await asyncio.gather(*(self._start(slot) for slot in range(self.count)))
        self._watching = asyncio.create_task(self._watch())

    async def _start(self, slot: int) -> None:
        receiving, sending = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=receiver_main, args=(self.settings, slot, sending),
            name=f"scp-receiver-{slot}", daemon=True)
        process.start()
        sending.close()
        self._processes[slot] = process
        try:
            ready = await asyncio.wait_for(
                asyncio.to_thread(receiving.poll, START_TIMEOUT), START_TIMEOUT + 5)
            if not ready:
                raise RuntimeError("a receiver process did not start listening")
            self.port = int(receiving.recv())
        except EOFError:
            raise RuntimeError("a receiver process exited at start") from None
        finally:
            receiving.close()

    async def _watch(self) -> None:
        while not self._stopping:
            await asyncio.sleep(1.0)
            for slot, process in list(self._processes.items()):
                if process.is_alive() or self._stopping:
                    continue
                log.error("receiver process exited; starting it again",
                          extra=log_fields(slot=slot, exitcode=process.exitcode))
                try:
                    await self._start(slot)
                except RuntimeError as exc:
                    log.error("receiver process not started again",
                              extra=log_fields(slot=slot, error=str(exc)))

    def alive(self) -> bool:
        return all(process.is_alive() for process in self._processes.values())

    async def stop(self) -> None:
        """SIGTERM to each receiver (it stops as the in-process SCP does), then wait."""
        self._stopping = True
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        for process in self._processes.values():
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in self._processes.values():
            await asyncio.to_thread(process.join, 15)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 5)
