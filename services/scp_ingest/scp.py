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
from dataclasses import dataclass, field

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




class StorageSCP:
    """A Storage SCP writing what it receives into ``journal``."""

    def __init__(self, journal: Journal, ae_title: str, options: ScpOptions | None = None
                 ) -> None:
        self.options = options = options or ScpOptions()
        self.journal = journal
        self.ae_title = ae_title
        self.allowed_hosts = parse_hosts(options.allowed_hosts)
        self.allowed_aets = set(options.allowed_aets)
        limits = Limits(max_pdu_size=options.max_pdu_size, acse_timeout=options.acse_timeout,
                        dimse_timeout=options.dimse_timeout,
                        network_timeout=options.network_timeout)
        self.acceptor = Acceptor(self, ae_title, storage_contexts(), limits)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.associations = 0
        self._stopping = False

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        """Listen on the running loop; ``reuse_port``: with other processes on one port."""
        self._server = await asyncio.start_server(
            self._connection, host, port, reuse_port=reuse_port or None, limit=1 << 20,
            backlog=128)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

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

    def _admit(self, host: str) -> bool:
        if self._stopping:
            return False
        if not host_allowed(host, self.allowed_hosts):
            RECEIVE_FAILURES.labels(reason="host-refused").inc()
            log.warning("connection refused: host not allowed", extra=log_fields(host=host))
            return False
        # One connection beyond the limit gets its A-ASSOCIATE-RJ (local limit exceeded);
        # connections beyond that are closed before a PDU is read.
        if len(self._connections) > self.options.max_associations:
            RECEIVE_FAILURES.labels(reason="too-many-associations").inc()
            log.warning("connection refused: too many associations",
                        extra=log_fields(host=host, limit=self.options.max_associations))
            return False
        return True

    # What the upper layer asks (upper_layer.StoreHandler).

    def accept_calling_ae(self, calling_ae: str) -> bool:
        return not self.allowed_aets or calling_ae in self.allowed_aets

    def admit_association(self) -> bool:
        if self.associations >= self.options.max_associations:
            return False
        self.associations += 1
        return True

    def release_association(self) -> None:
        self.associations -= 1

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
        if self._server is not None:
            self._server.close()
        deadline = asyncio.get_running_loop().time() + ANSWER_GRACE_SECONDS
        while self._connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None

