"""Receiver processes: ``SCP_PROCESSES`` Storage SCPs on one port, one per core.

The process that starts them opens the listening sockets on ``SCP_HOST:SCP_PORT``; every
receiver accepts on them, one connection at a time, the ones holding fewer associations
first (:meth:`services.scp_ingest.scp.StorageSCP.share`), and writes what it receives
into the one journal folder; it needs no backend, so it opens none. The process that
started them relays the journal (:class:`services.scp_ingest.journal.Relay`): in ``anon
serve`` it is the process holding the in-process queues. A receiver dies with its parent
(a kill -9 of the parent leaves no receiver answering Success with nobody relaying), and
a receiver that dies is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import signal
import socket
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from services.scp_ingest.scp import Places
from shared.config import Settings
from shared.observability.logging import configure_logging, log_fields

log = logging.getLogger("scp-ingest")

_PR_SET_PDEATHSIG = 1
START_TIMEOUT = 30.0
LISTEN_BACKLOG = 128


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets on ``host:port`` (every address the name resolves to, as
    ``asyncio.start_server`` binds them; port 0: one free port, the same for all)."""
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                               0, socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, protocol, _, address in infos:
            if (family, address[0]) in seen:
                continue
            seen.add((family, address[0]))
            sock = socket.socket(family, kind, protocol)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            bound = port or (sockets[0].getsockname()[1] if len(sockets) > 1 else 0)
            sock.bind((address[0], bound, *address[2:]))
            sock.listen(LISTEN_BACKLOG)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def receiver_main(settings: Settings, slot: int, sockets: list[socket.socket],
                  processes: int, counts: Any, ready: Connection) -> None:
    """The body of one receiver process; ``counts`` are the places every receiver holds
    (:class:`~services.scp_ingest.scp.Places`)."""
    _die_with_parent()
    configure_logging(f"scp-ingest-receiver-{slot}", settings.log_level)
    from shared.runtime import run_loop

    run_loop(_receive(settings, slot, sockets, processes, counts, ready))


async def _receive(settings: Settings, slot: int, sockets: list[socket.socket],
                   processes: int, counts: Any, ready: Connection) -> None:
    from services.scp_ingest.app import open_journal, scp_options
    from services.scp_ingest.scp import StorageSCP
    from shared.runtime import wait_for_signal

    journal = open_journal(settings)
    options = scp_options(settings)
    scp = StorageSCP(journal, settings.scp_ae_title, options, Places(counts, slot))
    scp.share(sockets, processes)
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
        # Connections and associations open in each receiver (scp.Places).
        self._counts = Places.shared_counts(self._context, count)
        self._watching: asyncio.Task[None] | None = None
        self._stopping = False
        self.port = settings.scp_port
        self._sockets: list[socket.socket] = []

    async def start(self) -> None:
        self._sockets = listening_sockets(self.settings.scp_host, self.settings.scp_port)
        self.port = int(self._sockets[0].getsockname()[1])
        await asyncio.gather(*(self._start(slot) for slot in range(self.count)))
        self._watching = asyncio.create_task(self._watch())

    async def _start(self, slot: int) -> None:
        receiving, sending = self._context.Pipe(duplex=False)
        Places.clear(self._counts, slot)  # a receiver started again holds nothing yet
        process = self._context.Process(
            target=receiver_main,
            args=(self.settings, slot, self._sockets, self.count, self._counts, sending),
            name=f"scp-receiver-{slot}", daemon=True)
        process.start()
        sending.close()
        self._processes[slot] = process
        try:
            ready = await asyncio.wait_for(
                asyncio.to_thread(receiving.poll, START_TIMEOUT), START_TIMEOUT + 5)
            if not ready:
                raise RuntimeError("a receiver process did not start listening")
            receiving.recv()
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
        for sock in self._sockets:
            sock.close()
        self._sockets = []
