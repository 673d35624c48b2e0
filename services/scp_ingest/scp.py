"""The Storage SCP (PS3.4 Annex B) on pynetdicom.

Every storage SOP class is accepted with the common transfer syntaxes, uncompressed and
compressed, stored as received. Datasets are received into temporary files
(pynetdicom's chunked receive), validated and streamed to the incoming bucket. The
C-STORE response is Success (0000) only once the object is stored and its message is
confirmed by the broker; Out of Resources (A700) when storage or broker cannot take it
(the sender may retry, nothing is kept); Cannot Understand (C000) for an object that fails
validation, which is kept in quarantine with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from shared.ingest import Ingest, IngestFailed
from shared.observability.logging import log_fields, quiet_pynetdicom
from shared.observability.metrics import RECEIVE_FAILURES

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
T = TypeVar("T")


def storage_contexts() -> list[tuple[str, list[str]]]:
    """(abstract syntax, transfer syntaxes) of every presentation context we accept."""
    contexts = [(str(cx.abstract_syntax), list(ALL_TRANSFER_SYNTAXES))
                for cx in AllStoragePresentationContexts]
    contexts.append((str(Verification), list(ALL_TRANSFER_SYNTAXES)))
    return contexts


# pynetdicom's DUL thread polls its socket and queues, sleeping 1 ms when idle: with one
# C-STORE at a time on an association, that sleep is paid on every object (3.4 s against
# 2.6 s for 1,000 small objects here). A shorter sleep while the association is open
# costs a little CPU and gives the time back.
DUL_POLL_SECONDS = 0.0002


def set_nodelay(event: evt.Event) -> None:
    """Disable Nagle's algorithm (small PDUs would otherwise wait 40 ms for an ACK) and
    poll the association's socket more often."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    event.assoc.dul._run_loop_delay = DUL_POLL_SECONDS


class StorageSCP:
    """A pynetdicom Storage SCP feeding :class:`Ingest`, which runs on ``loop``."""

    def __init__(
        self,
        ingest: Ingest,
        loop: asyncio.AbstractEventLoop,
        ae_title: str,
        allowed_aets: list[str] | None = None,
        allowed_hosts: list[str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        quiet_pynetdicom()
        pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
        self.ingest = ingest
        self.loop = loop
        self.timeout = timeout
        self.allowed_hosts = set(allowed_hosts or [])
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_associations = 32
        for abstract, syntaxes in storage_contexts():
            self.ae.add_supported_context(abstract, syntaxes)
        if allowed_aets:
            self.ae.require_calling_aet = list(allowed_aets)
        self._server: Any = None

    def start(self, host: str, port: int) -> None:
        """Listen in background threads (one per association)."""
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
        ]
        self._server = self.ae.start_server((host, port), block=False, evt_handlers=handlers)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else 0

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_connection(self, event: evt.Event) -> None:
        set_nodelay(event)
        host = str(event.assoc.requestor.address)
        if self.allowed_hosts and host not in self.allowed_hosts:
            log.warning("connection refused: host not allowed", extra=log_fields(host=host))
            event.assoc.abort()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=self.timeout)

    def _on_store(self, event: evt.Event) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        path = Path(event.dataset_path)
        try:
            received = self._run(self.ingest.receive_file(path, "scp", calling))
        except IngestFailed as exc:
            RECEIVE_FAILURES.labels(reason="unavailable").inc()
            log.warning("object not received", extra=log_fields(reason=str(exc)))
            return OUT_OF_RESOURCES
        except Exception as exc:  # timeouts and the unexpected: the sender should retry
            RECEIVE_FAILURES.labels(reason="error").inc()
            log.error("object not received", extra=log_fields(error=type(exc).__name__))
            return OUT_OF_RESOURCES
        if received.quarantined:
            RECEIVE_FAILURES.labels(reason="invalid").inc()
            return CANNOT_UNDERSTAND
        return SUCCESS

