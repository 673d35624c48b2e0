"""The Storage SCP (PS3.4 Annex B) on pynetdicom.

Every storage SOP class is accepted with the common transfer syntaxes, uncompressed and
compressed, stored as received. Datasets are received into temporary files
(pynetdicom's chunked receive), validated and streamed to the incoming bucket. The
C-STORE response is Success (0000) only once the object is stored and its message is
confirmed by the broker; Out of Resources (A700) when storage or broker cannot take it in
time (the sender may retry, nothing is kept); Cannot Understand (C000) for an object that
is refused (it fails validation, exceeds a limit or is larger than the largest accepted),
which is kept in quarantine with the reason.

Peers are admitted in layers: a host not on the allow-list has its connection closed
before any PDU is read; connections beyond the association limit are closed the same way;
the association limit itself, and the calling AE titles, are enforced by rejecting the
A-ASSOCIATE-RQ (A-ASSOCIATE-RJ).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from shared.dimse.association import set_nodelay
from shared.ingest import Abandoned, Ingest, IngestFailed, Receipt
from shared.observability.logging import log_fields, quiet_pynetdicom
from shared.observability.metrics import RECEIVE_FAILURES

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
T = TypeVar("T")

# Once a receipt has passed its point of no return (its message is being published), the
# SCP waits this much longer for the outcome rather than answer before it is known; the
# broker bounds a publish by its own operation timeout (10 s), well within it.
COMMIT_GRACE_SECONDS = 30.0
# At a stop, associations whose C-STOREs are all answered get this long to be released by
# their peers before they are aborted.
ANSWER_GRACE_SECONDS = 2.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_hosts(entries: list[str]) -> list[Network]:
    """Addresses and networks (``10.1.2.3``, ``10.1.0.0/16``, ``::1``) of an allow-list;
    raises ValueError naming an entry that is neither."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return networks


def host_allowed(address: str, allowed: list[Network]) -> bool:
    """Whether a peer's address is on the allow-list (an empty list allows every host);
    an IPv4 peer seen on an IPv6 socket (``::ffff:a.b.c.d``) counts as its IPv4 address."""
    if not allowed:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == network.version and ip in network for network in allowed)


@dataclass(frozen=True)
class ScpOptions:
    """What the SCP admits and how long it waits (the ``SCP_*`` settings)."""

    allowed_aets: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)
    max_associations: int = 32
    max_pdu_size: int = 16382
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    store_timeout: float = 60.0
    # A data set growing beyond this while it is received is cut off (None: no limit);
    # one within it but over the largest object is refused whole, with its reason.
    max_spooled_bytes: int | None = None


def spool_limit(max_object_bytes: int) -> int:
    """How large a data set may grow while it is received before the association is cut
    off: the largest object with room for its file meta and encoding (1 % and 1 MiB)."""
    return max_object_bytes + max_object_bytes // 100 + (1 << 20)


def remove_stale_spool_files(folder: Path) -> int:
    """Delete the data sets a previous run left half received in its own spool folder
    (pynetdicom names them ``tmp*.dcm``); at start no receipt is in flight."""
    removed = 0
    for stale in folder.glob("tmp*.dcm"):
        with contextlib.suppress(OSError):
            stale.unlink()
            removed += 1
    return removed


def storage_contexts() -> list[tuple[str, list[str]]]:
    """(abstract syntax, transfer syntaxes) of every presentation context we accept."""
    contexts = [(str(cx.abstract_syntax), list(ALL_TRANSFER_SYNTAXES))
                for cx in AllStoragePresentationContexts]
    contexts.append((str(Verification), list(ALL_TRANSFER_SYNTAXES)))
    return contexts


P_DATA_TF = 0x04
# PDUs other than P-DATA (association negotiation, release, abort) are small; an
# A-ASSOCIATE-RQ proposing 128 contexts with many transfer syntaxes stays far below this.
MAX_CONTROL_PDU = 1 << 20


class PduTooLong(OSError):
    """The peer sent a PDU longer than the SCP accepts, or more data set than the largest
    object accepted."""


def _spooled_bytes(assoc: Any) -> int:
    """Bytes of the data set being received into its temporary file (0 if none)."""
    message = assoc.dimse.message
    spool = getattr(message, "_data_set_file", None) if message is not None else None
    if spool is None or spool.closed:
        return 0
    return int(spool.tell())


def guard_receipt(event: evt.Event, max_pdu_size: int, max_dataset_bytes: int | None) -> None:
    """Bound what a peer makes the SCP hold, before it is read.

    pynetdicom reads a whole PDU into memory, of whatever length its header claims, and
    spools a whole data set to disk, of whatever size. A P-DATA-TF PDU longer than the
    Maximum Length Received of the A-ASSOCIATE-AC (``max_pdu_size``, 0: no limit), any
    other PDU longer than :data:`MAX_CONTROL_PDU`, or a data set growing beyond
    ``max_dataset_bytes`` closes the connection (the association is aborted) before more
    is read. Whatever the end of the association, a data set it left half received (or
    received but never handled) is deleted from the spool folder: it holds PHI.
    """
    assoc = event.assoc
    assoc_socket = assoc.dul.socket
    if assoc_socket is None:
        return
    receive: Callable[[int], bytearray] = assoc_socket.recv
    refused: list[str] = []

    def refuse(reason: str, why: str, **fields: object) -> PduTooLong:
        RECEIVE_FAILURES.labels(reason=reason).inc()
        log.warning(f"association aborted: {why}", extra=log_fields(**fields))
        refused.append(why)
        return PduTooLong(why)

    def recv(nr_bytes: int) -> bytearray:
        if refused:  # nothing more is read from this peer
            raise PduTooLong(refused[0])
        data = receive(nr_bytes)
        if nr_bytes == 6 and len(data) == 6:  # the DUL reads each PDU header alone
            pdu_type, _, length = struct.unpack(">BBL", data)
            limit = max_pdu_size if pdu_type == P_DATA_TF else MAX_CONTROL_PDU
            if limit and length > limit:
                raise refuse("pdu-too-long", "PDU longer than accepted",
                             pdu_type=pdu_type, length=length, limit=limit)
            if (pdu_type == P_DATA_TF and max_dataset_bytes is not None
                    and _spooled_bytes(assoc) > max_dataset_bytes):
                raise refuse("too-large", "data set larger than the largest object accepted",
                             limit=max_dataset_bytes)
        return data

    assoc_socket.recv = recv  # type: ignore[method-assign]
    run = assoc.run

    def run_then_clean_up() -> None:
        try:
            run()
        finally:
            _remove_spooled(assoc)

    assoc.run = run_then_clean_up  # type: ignore[method-assign]


def _remove_spooled(assoc: Any) -> None:
    """Delete the temporary files of data sets the association will never hand over."""
    message = assoc.dimse.message
    spools = [getattr(message, "_data_set_file", None) if message is not None else None]
    spools += [getattr(primitive, "_dataset_file", None)
               for _, primitive in list(assoc.dimse.msg_queue.queue)]
    for spool in spools:
        if spool is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            spool.close()
        with contextlib.suppress(OSError):
            os.unlink(spool.name)
            log.info("half-received data set deleted from the spool folder")


class _AdmittingServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, asking its AE whether to take a connection at all
    (socketserver closes a connection refused here: no thread, no PDU read or answered)."""

    ae: _AdmittingAE

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.ae.admit(str(client_address[0]))


class _AdmittingAE(AE):
    """An AE whose servers admit connections by host and by the number of associations."""

    def __init__(self, ae_title: str, allowed_hosts: list[Network]) -> None:
        super().__init__(ae_title=ae_title)
        self.allowed_hosts = allowed_hosts

    def make_server(
        self, address: Any, ae_title: str | None = None, contexts: Any = None,
        ssl_context: Any = None, evt_handlers: Any = None, server_class: Any = None,
        **kwargs: Any,
    ) -> ThreadedAssociationServer:
        return super().make_server(address, ae_title, contexts, ssl_context, evt_handlers,
                                   server_class=_AdmittingServer, **kwargs)

    def admit(self, host: str) -> bool:
        if not host_allowed(host, self.allowed_hosts):
            RECEIVE_FAILURES.labels(reason="host-refused").inc()
            log.warning("connection refused: host not allowed", extra=log_fields(host=host))
            return False
        # One connection beyond the limit gets its A-ASSOCIATE-RJ (local limit exceeded);
        # connections beyond that are closed before they cost a thread.
        if len(self.active_associations) > self.maximum_associations:
            RECEIVE_FAILURES.labels(reason="too-many-associations").inc()
            log.warning("connection refused: too many associations",
                        extra=log_fields(host=host, limit=self.maximum_associations))
            return False
        return True


class StorageSCP:
    """A pynetdicom Storage SCP feeding :class:`Ingest`, which runs on ``loop``."""

    def __init__(
        self,
        ingest: Ingest,
        loop: asyncio.AbstractEventLoop,
        ae_title: str,
        options: ScpOptions | None = None,
    ) -> None:
        quiet_pynetdicom()
        pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
        self.options = options = options or ScpOptions()
        self.ingest = ingest
        self.loop = loop
        self.timeout = options.store_timeout
        self.ae = _AdmittingAE(ae_title, parse_hosts(options.allowed_hosts))
        self.ae.maximum_associations = options.max_associations
        self.ae.maximum_pdu_size = options.max_pdu_size
        self.ae.acse_timeout = options.acse_timeout  # also the ARTIM timer
        self.ae.dimse_timeout = options.dimse_timeout
        self.ae.network_timeout = options.network_timeout
        for abstract, syntaxes in storage_contexts():
            self.ae.add_supported_context(abstract, syntaxes)
        if options.allowed_aets:
            self.ae.require_calling_aet = list(options.allowed_aets)
        self._server: Any = None
        self._stopping = False
        self._in_flight = 0
        self._idle = threading.Condition()

    def start(self, host: str, port: int) -> None:
        """Listen in background threads (one per association)."""
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_CONN_OPEN, guard_receipt,
             [self.options.max_pdu_size, self.options.max_spooled_bytes]),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
        ]
        self._server = self.ae.start_server((host, port), block=False, evt_handlers=handlers)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else 0

    def stop(self) -> None:
        """Stop: no new connection, no new C-STORE (answered A700, nothing kept), the
        C-STOREs in flight finish and are answered (within the storage wait), then every
        association still open is aborted. Called on the loop's own thread (which the
        receipts need), it does not wait: the caller then awaits ``ingest.drain()``."""
        self._stopping = True
        if self._server is not None:
            self._server.shutdown()
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if not on_loop:
            with self._idle:
                self._idle.wait_for(lambda: self._in_flight == 0,
                                    timeout=self.timeout + COMMIT_GRACE_SECONDS)
            if self._server is not None:
                # A handler that returned has only queued its answer: the association's
                # own thread sends it. Give the peers a moment to read their answers and
                # release before what is left open is aborted.
                deadline = time.monotonic() + ANSWER_GRACE_SECONDS
                while self._server.active_associations and time.monotonic() < deadline:
                    time.sleep(0.02)
                for assoc in self._server.active_associations:
                    assoc.abort()
        self._server = None

    def _run(self, coroutine: Coroutine[Any, Any, T], receipt: Receipt) -> T:
        """Run ``coroutine`` on the loop and wait for it at most ``store_timeout``; then
        abandon it (it keeps and announces nothing) and raise TimeoutError, unless it has
        already committed, in which case its outcome is awaited."""
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coroutine, self.loop)
        try:
            return future.result(timeout=self.timeout)
        except TimeoutError:
            if receipt.abandon():
                future.cancel()
                raise
        try:
            return future.result(timeout=COMMIT_GRACE_SECONDS)
        except TimeoutError:
            future.cancel()  # the receipt deletes what it stored
            raise

    def _on_store(self, event: evt.Event) -> int:
        with self._idle:
            if self._stopping:
                RECEIVE_FAILURES.labels(reason="stopping").inc()
                return OUT_OF_RESOURCES  # nothing kept: the sender retries once we are back
            self._in_flight += 1
        try:
            return self._store(event)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _store(self, event: evt.Event) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        path = Path(event.dataset_path)
        receipt = Receipt()
        try:
            received = self._run(self.ingest.receive_file(path, "scp", calling, receipt),
                                 receipt)
        except IngestFailed as exc:
            RECEIVE_FAILURES.labels(reason="unavailable").inc()
            log.warning("object not received", extra=log_fields(reason=str(exc)))
            return OUT_OF_RESOURCES
        except (TimeoutError, Abandoned):
            RECEIVE_FAILURES.labels(reason="timeout").inc()
            log.warning("object not received: storage did not complete in time",
                        extra=log_fields(timeout=self.timeout))
            return OUT_OF_RESOURCES
        except Exception as exc:  # the unexpected: the sender should retry
            RECEIVE_FAILURES.labels(reason="error").inc()
            log.error("object not received", extra=log_fields(error=type(exc).__name__))
            return OUT_OF_RESOURCES
        finally:
            # The sender was waiting for this answer, not idle: the network timeout counts
            # from the answer (pynetdicom restarts it only on a received PDU).
            event.assoc.dul._idle_timer.restart()
        if received.quarantined:
            RECEIVE_FAILURES.labels(reason="invalid").inc()
            log.info("object refused", extra=log_fields(key=received.key,
                                                        reason_code=received.code))
            return CANNOT_UNDERSTAND
        return SUCCESS
