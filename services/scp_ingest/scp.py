"""The Storage SCP (PS3.4 Annex B) on our asyncio upper layer (:mod:`.upper_layer`).

Every storage SOP class is accepted with the common transfer syntaxes, uncompressed and
compressed, stored as received. A data set is written to the SCP's journal as it arrives
(:mod:`.journal`), checked once complete, and made durable there; the C-STORE response is
Success (0000) only then, and the journal's relay stores and announces the object
afterwards. Out of Resources (A700) when the journal's volume cannot keep the object (the
sender may retry; nothing is kept), or while the SCP is stopping; Cannot Understand (C000)
for an object that is refused (it fails validation or is larger than the largest
accepted), which is kept in quarantine with the reason.

Peers are admitted in layers: a host not on the allow-list has its connection closed
before any PDU is read; connections beyond the association limit are closed the same way;
the association limit itself, and the calling AE titles, are enforced by rejecting the
A-ASSOCIATE-RQ (A-ASSOCIATE-RJ).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from services.scp_ingest.journal import Journal, JournalSink
from services.scp_ingest.upper_layer import Acceptor, Association, Command, Limits
from shared.dicom.encode import file_meta
from shared.observability.logging import log_fields
from shared.observability.metrics import RECEIVE_FAILURES

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
# At a stop, associations whose C-STOREs are all answered get this long to be released by
# their peers before they are aborted.
ANSWER_GRACE_SECONDS = 2.0
# On a listening socket shared by receiver processes, a process lets the others try first
# for this long per association it already holds (see StorageSCP.share).
ACCEPT_DEFER_SECONDS = 0.002
STREAM_LIMIT = 1 << 20

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
    max_object_bytes: int | None = None


def spool_limit(max_object_bytes: int) -> int:
    """How large a data set may grow while it is received before the association is cut
    off: the largest object with room for its file meta and encoding (1 % and 1 MiB)."""
    return max_object_bytes + max_object_bytes // 100 + (1 << 20)


def storage_contexts() -> list[tuple[str, list[str]]]:
    """(abstract syntax, transfer syntaxes) of every presentation context we accept."""
    contexts = [(str(cx.abstract_syntax), list(ALL_TRANSFER_SYNTAXES))
                for cx in AllStoragePresentationContexts]
    contexts.append((str(Verification), list(ALL_TRANSFER_SYNTAXES)))
    return contexts




CONNECTIONS, ASSOCIATIONS = 0, 1


class Places:
    """The connections and associations open, counted against their limits for every
    receiver process on the port together. ``counts`` is an array of two integers per
    receiver, in shared memory with its lock (``multiprocessing.Array``), and ``slot`` is
    this receiver's: each process writes its own pair and reads the sum under the lock, so
    a limit holds whichever process a connection reaches, and a receiver started again in
    a slot (its pair set back to zero) is not charged for the places of the one that died.
    Without ``counts``, this process's own."""

    def __init__(self, counts: Any = None, slot: int = 0) -> None:
        self._counts = counts
        self._slot = slot
        self._own = [0, 0]

    @staticmethod
    def shared_counts(context: Any, processes: int) -> Any:
        """The ``counts`` of ``processes`` receivers, all zero, from a multiprocessing
        context (to be handed to each receiver process)."""
        return context.Array("i", 2 * processes)

    @staticmethod
    def clear(counts: Any, slot: int) -> None:
        """Set ``slot``'s places back to zero: its receiver is started (again)."""
        with counts.get_lock():
            counts[2 * slot] = counts[2 * slot + 1] = 0

    def take(self, kind: int, limit: int) -> bool:
        """A place of ``kind`` if fewer than ``limit`` are taken, all receivers counted."""
        if self._counts is None:
            taken = self._own[kind]
        else:
            with self._counts.get_lock():
                counts = self._counts.get_obj()
                taken = sum(counts[kind::2])
                if taken < limit:
                    counts[2 * self._slot + kind] += 1
        if taken >= limit:
            return False
        self._own[kind] += 1
        return True

    def give_back(self, kind: int) -> None:
        self._own[kind] -= 1
        if self._counts is not None:
            with self._counts.get_lock():
                self._counts.get_obj()[2 * self._slot + kind] -= 1

    def held(self, kind: int) -> int:
        """Places of ``kind`` this process holds."""
        return self._own[kind]


class StorageSCP:
    """A Storage SCP writing what it receives into ``journal``; ``places`` counts its
    connections and associations against the limits (with those of the other receiver
    processes when it is shared)."""

    def __init__(self, journal: Journal, ae_title: str, options: ScpOptions | None = None,
                 places: Places | None = None) -> None:
        self.options = options = options or ScpOptions()
        self.journal = journal
        self.ae_title = ae_title
        self.allowed_hosts = parse_hosts(options.allowed_hosts)
        self.allowed_aets = set(options.allowed_aets)
        limits = Limits(max_pdu_size=options.max_pdu_size, acse_timeout=options.acse_timeout,
                        dimse_timeout=options.dimse_timeout,
                        network_timeout=options.network_timeout)
        self.acceptor = Acceptor(self, ae_title, storage_contexts(), limits)
        self._connections: set[asyncio.Task[None]] = set()
        self._shared: list[socket.socket] = []
        self._deferred: set[socket.socket] = set()
        self._accepting: set[asyncio.Task[None]] = set()
        self._sharing_processes = 1
        self.places = places or Places()
        self._stopping = False

    def share(self, sockets: list[socket.socket], processes: int) -> None:
        """Accept on listening sockets that other processes accept on too (receiver
        processes): one connection at a time, and a process already holding connections
        waits ``ACCEPT_DEFER_SECONDS`` per connection before it tries, so an idler one
        takes the newcomer. (SO_REUSEPORT instead spreads connections by a hash of their
        addresses: four associations over two processes landed three and one, or four and
        none, as often as two and two, and the busier process set the sender's pace.)"""
        loop = asyncio.get_running_loop()
        self._sharing_processes = processes
        for sock in sockets:
            sock.setblocking(False)
            self._shared.append(sock)
            loop.add_reader(sock.fileno(), self._acceptable, sock)

    @property
    def port(self) -> int:
        return int(self._shared[0].getsockname()[1]) if self._shared else 0

    def _acceptable(self, sock: socket.socket) -> None:
        """A connection waits on a shared socket: take it, or let the others try first."""
        loop = asyncio.get_running_loop()
        if self._stopping:
            return
        held = len(self._accepting)  # connections accepted here and not yet closed
        if held and self._sharing_processes > 1 and sock not in self._deferred:
            self._deferred.add(sock)
            loop.remove_reader(sock.fileno())
            loop.call_later(ACCEPT_DEFER_SECONDS * held, self._retry, sock)
            return
        self._deferred.discard(sock)
        try:
            connection, _ = sock.accept()
        except (BlockingIOError, InterruptedError):  # another process took it
            return
        except OSError as exc:  # out of file descriptors, for one: try again shortly
            log.warning("connection not accepted", extra=log_fields(error=type(exc).__name__))
            loop.remove_reader(sock.fileno())
            loop.call_later(0.1, self._retry, sock)
            return
        connection.setblocking(False)
        task = loop.create_task(self._accepted(connection))
        self._accepting.add(task)
        task.add_done_callback(self._accepting.discard)

    def _retry(self, sock: socket.socket) -> None:
        if self._stopping or sock not in self._shared:
            return
        asyncio.get_running_loop().add_reader(sock.fileno(), self._acceptable, sock)
        self._acceptable(sock)

    async def _accepted(self, connection: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock=connection)
        except OSError:
            connection.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        await self._connection(reader, writer)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        if not self._admit(host):
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self.acceptor.serve(reader, writer)
        finally:
            self._connections.discard(task)
            self.places.give_back(CONNECTIONS)

    def _admit(self, host: str) -> bool:
        if self._stopping:
            return False
        if not host_allowed(host, self.allowed_hosts):
            RECEIVE_FAILURES.labels(reason="host-refused").inc()
            log.warning("connection refused: host not allowed", extra=log_fields(host=host))
            return False
        # One connection beyond the limit gets its A-ASSOCIATE-RJ (local limit exceeded);
        # connections beyond that are closed before a PDU is read.
        if not self.places.take(CONNECTIONS, self.options.max_associations + 1):
            RECEIVE_FAILURES.labels(reason="too-many-associations").inc()
            log.warning("connection refused: too many associations",
                        extra=log_fields(host=host, limit=self.options.max_associations))
            return False
        return True

    # What the upper layer asks (upper_layer.StoreHandler).

    def accept_calling_ae(self, calling_ae: str) -> bool:
        return not self.allowed_aets or calling_ae in self.allowed_aets

    @property
    def associations(self) -> int:
        """Associations open in this process."""
        return self.places.held(ASSOCIATIONS)

    def admit_association(self) -> bool:
        if not self.places.take(ASSOCIATIONS, self.options.max_associations):
            return False
        self.journal.associations = self.associations
        return True

    def release_association(self) -> None:
        self.places.give_back(ASSOCIATIONS)
        self.journal.associations = self.associations

    def begin_store(self, association: Association, command: Command,
                    transfer_syntax: str) -> JournalSink | int:
        if self._stopping:
            RECEIVE_FAILURES.labels(reason="stopping").inc()
            return OUT_OF_RESOURCES  # nothing kept: the sender retries once we are back
        if not self.journal.has_room():
            RECEIVE_FAILURES.labels(reason="journal-full").inc()
            log.warning("object not received: the journal's volume is full")
            return OUT_OF_RESOURCES
        header = file_meta(command.sop_class_uid, command.sop_instance_uid, transfer_syntax)
        try:
            return JournalSink(self.journal, association.calling_ae, header,
                               self.options.max_spooled_bytes, self.options.max_object_bytes)
        except OSError as exc:
            RECEIVE_FAILURES.labels(reason="journal-error").inc()
            log.warning("object not received: the journal cannot keep it",
                        extra=log_fields(error=type(exc).__name__))
            return OUT_OF_RESOURCES

    async def stop(self) -> None:
        """Stop: no new connection, no new C-STORE (answered A700, nothing kept); the
        associations get a moment to read their last answers and release, then what is
        still open is aborted (a data set half received is deleted)."""
        self._stopping = True
        for sock in self._shared:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(sock.fileno())
        deadline = asyncio.get_running_loop().time() + ANSWER_GRACE_SECONDS
        while self._connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

