"""The DICOM upper layer (PS3.8) of the Storage SCP, on asyncio streams.

One coroutine per association runs the acceptor's side of the state machine (PS3.8
9.2): Sta2 waits for the A-ASSOCIATE-RQ under the ARTIM timer, Sta6 carries P-DATA
until a release or an abort. The association PDUs are decoded and encoded by
pynetdicom's codecs (``pynetdicom.pdu`` and its items; presentation contexts are
negotiated by ``pynetdicom.presentation``); what is ours is the transport, the state
machine, and the hot path: P-DATA-TF PDUs and DIMSE command sets (PS3.7 9.3, implicit VR
little endian, a dozen elements) are read and written here directly, since a C-STORE of
a small object is little more than those, and pynetdicom's general decoders built a
pydicom data set for every command.

A data set is never held whole in memory: each P-DATA value is handed to the
:class:`StoreHandler` as it arrives (the Storage SCP writes it to its journal). The
asynchronous operations window is one: the next PDU is read only once the previous
operation has been answered.

Errors of the peer end the association as PS3.8 says: an unrecognized PDU type is an
A-ABORT with reason 1, a PDU unexpected in the state reason 2, a malformed PDU or a
PDU longer than announced reason 6; the connection is closed after the A-ABORT. A peer
silent beyond the timers is aborted the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from shared.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from shared.observability.logging import log_fields
from shared.observability.metrics import RECEIVE_FAILURES

log = logging.getLogger(__name__)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"

# PDU types (PS3.8 9.3.1)
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07
KNOWN_PDUS = frozenset({ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF, RELEASE_RQ,
                        RELEASE_RP, ABORT})
# PDUs other than P-DATA are small; an A-ASSOCIATE-RQ proposing 128 contexts with many
# transfer syntaxes each stays far below this.
MAX_CONTROL_PDU = 1 << 20
# A command set is a few hundred bytes; one growing beyond this is not a command.
MAX_COMMAND_BYTES = 1 << 16

# A-ABORT reasons (PS3.8 9.3.8, source 2: service provider)
UNRECOGNIZED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 0x01, 0x02, 0x06

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4
REJECT_CALLING_AE = (1, 1, 3)
REJECT_APPLICATION_CONTEXT = (1, 1, 2)
REJECT_PROTOCOL_VERSION = (1, 2, 2)
REJECT_BUSY = (2, 3, 2)  # transient, service provider (presentation), local limit exceeded

# DIMSE command fields (PS3.7 E.1)
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
NO_DATA_SET = 0x0101
SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
UNRECOGNIZED_OPERATION = 0x0211


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class PeerError(Exception):
    """The peer broke the protocol; ``reason`` is the A-ABORT reason to send."""

    def __init__(self, reason: int, why: str) -> None:
        super().__init__(why)
        self.reason = reason


class PeerGone(Exception):
    """The connection ended, or the peer aborted the association."""


@dataclass(frozen=True)
class Limits:
    """What a peer may make the acceptor wait for or hold."""

    max_pdu_size: int = 16382  # Maximum Length Received we announce (0: no limit)
    acse_timeout: float = 30.0  # ARTIM: the A-ASSOCIATE-RQ, and the close after a release
    dimse_timeout: float = 30.0  # the rest of a message once it has begun
    network_timeout: float = 60.0  # an idle association


@dataclass
class Association:
    """What was negotiated: the peer, and the accepted contexts by ID."""

    calling_ae: str
    called_ae: str
    peer_host: str
    contexts: dict[int, tuple[str, str]] = field(default_factory=dict)  # id: (abstract, ts)
    peer_max_pdu: int = 0


@dataclass
class Command:
    """The elements of a DIMSE command set the Storage and Verification SCPs use."""

    field: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    has_data_set: bool


class DataSetSink(Protocol):
    """Where a C-STORE's data set goes while it arrives."""

    def write(self, fragment: memoryview) -> None:
        """Take the next fragment. A sink that cannot keep it (a full volume) drops it
        and the rest, and answers from :meth:`finish`; one that must not be sent more (a
        data set over the largest accepted) raises :class:`PeerError`."""

    async def finish(self) -> int:
        """The whole data set arrived: keep it and give the C-STORE status."""

    def discard(self) -> None:
        """The data set will never be complete: keep nothing of it."""


class StoreHandler(Protocol):
    """What the acceptor asks of the Storage SCP above it."""

    def accept_calling_ae(self, calling_ae: str) -> bool: ...

    def admit_association(self) -> bool: ...

    def release_association(self) -> None: ...

    def begin_store(self, association: Association, command: Command,
                    transfer_syntax: str) -> DataSetSink | int:
        """A sink for the data set, or a status to answer at once (nothing is kept)."""


def accepted_contexts(contexts: list[tuple[str, list[str]]]) -> list[PresentationContext]:
    """pynetdicom presentation contexts of what the acceptor supports."""
    supported = []
    for abstract, syntaxes in contexts:
        context = PresentationContext()
        context.abstract_syntax = UID(abstract)
        context.transfer_syntax = [UID(syntax) for syntax in syntaxes]
        supported.append(context)
    return supported


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def abort_pdu(reason: int) -> bytes:
    return _pdu(ABORT, struct.pack(">BBBB", 0, 0, 2, reason))


def reject_pdu(result: int, source: int, reason: int) -> bytes:
    return _pdu(ASSOCIATE_RJ, struct.pack(">BBBB", 0, result, source, reason))


RELEASE_RP_PDU = _pdu(RELEASE_RP, b"\x00" * 4)


def _element(tag: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(value)) + value


def encode_response(command_field: int, message_id: int, status: int, sop_class_uid: str,
                    sop_instance_uid: str = "") -> bytes:
    """A C-STORE-RSP or C-ECHO-RSP command set (implicit VR little endian)."""
    body = _element(0x00000002, sop_class_uid.encode("ascii"))
    body += _element(0x00000100, struct.pack("<H", command_field))
    body += _element(0x00000120, struct.pack("<H", message_id))
    body += _element(0x00000800, struct.pack("<H", NO_DATA_SET))
    body += _element(0x00000900, struct.pack("<H", status))
    if sop_instance_uid:
        body += _element(0x00001000, sop_instance_uid.encode("ascii"))
    return _element(0x00000000, struct.pack("<L", len(body))) + body


def _text(value: bytes) -> str:
    return value.rstrip(b"\x00 ").decode("ascii", "replace")


def decode_command(data: bytes) -> Command:
    """The command set's elements we use; raises PeerError for one that is malformed."""
    values: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < 8:
            raise PeerError(INVALID_PARAMETER, "command set truncated")
        group, element, length = struct.unpack_from("<HHL", data, offset)
        offset += 8
        if group != 0 or length > end - offset:
            raise PeerError(INVALID_PARAMETER, "command set malformed")
        values[element] = data[offset:offset + length]
        offset += length

    def number(element: int) -> int:
        value = values.get(element)
        if value is None or len(value) != 2:
            raise PeerError(INVALID_PARAMETER, "command element missing or malformed")
        return int.from_bytes(value, "little")

    return Command(
        field=number(0x0100),
        message_id=number(0x0110) if number(0x0100) & 0x8000 == 0 else 0,
        sop_class_uid=_text(values.get(0x0002, b"")),
        sop_instance_uid=_text(values.get(0x1000, b"")),
        has_data_set=number(0x0800) != NO_DATA_SET,
    )


class Acceptor:
    """Runs the acceptor's side of associations for a :class:`StoreHandler`."""

    def __init__(self, handler: StoreHandler, ae_title: str,
                 contexts: list[tuple[str, list[str]]], limits: Limits) -> None:
        self.handler = handler
        self.ae_title = ae_title
        self.supported = accepted_contexts(contexts)
        self.limits = limits

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection, from its first byte to its close."""
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family not in (socket.AF_INET, socket.AF_INET6):
            sock = None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        connection = _Connection(self, reader, writer, host, sock)
        try:
            await connection.run()
        except PeerError as exc:
            RECEIVE_FAILURES.labels(reason="protocol").inc()
            log.warning("association aborted: protocol error",
                        extra=log_fields(host=host, why=str(exc)))
            with contextlib.suppress(Exception):
                writer.write(abort_pdu(exc.reason))
                await asyncio.wait_for(writer.drain(), 2.0)
        except TimeoutError:
            RECEIVE_FAILURES.labels(reason="timeout").inc()
            if connection.association is None:
                # ARTIM expired before an A-ASSOCIATE-RQ (Sta2): the connection is closed.
                log.info("connection closed: no association requested",
                         extra=log_fields(host=host))
            else:
                log.info("association aborted: peer silent", extra=log_fields(host=host))
                with contextlib.suppress(Exception):
                    writer.write(abort_pdu(0))
                    await asyncio.wait_for(writer.drain(), 2.0)
        except (PeerGone, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # a defect here must cost one association, not the SCP
            RECEIVE_FAILURES.labels(reason="error").inc()
            log.error("association aborted: unexpected error",
                      extra=log_fields(host=host, error=type(exc).__name__))
            with contextlib.suppress(Exception):
                writer.write(abort_pdu(0))
                await asyncio.wait_for(writer.drain(), 2.0)
        finally:
            connection.end()
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)


class _Connection:
    """The state of one connection (PS3.8 Sta2 to Sta13)."""

    def __init__(self, acceptor: Acceptor, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, host: str, sock: Any) -> None:
        self.acceptor = acceptor
        self.sock = sock
        self.limits = acceptor.limits
        self.reader = reader
        self.writer = writer
        self.host = host
        self.association: Association | None = None
        self.admitted = False
        self.sink: DataSetSink | None = None
        # The status of a C-STORE decided before its data set arrived (None: the sink's).
        self.status: int | None = None

    def end(self) -> None:
        if self.sink is not None:
            self.sink.discard()
            self.sink = None
        if self.admitted:
            self.acceptor.handler.release_association()
            self.admitted = False

    async def _read_pdu(self, timeout: float) -> tuple[int, bytes]:
        """The next PDU's type and body; the header alone is read under ``timeout`` (the
        state's timer), the body under the DIMSE timeout."""
        self._acknowledge_at_once()
        # Timeouts as contexts, not wait_for: no task per read (two reads per PDU).
        try:
            async with asyncio.timeout(timeout):
                header = await self.reader.readexactly(6)
        except asyncio.IncompleteReadError as exc:
            raise PeerGone from exc
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in KNOWN_PDUS:
            raise PeerError(UNRECOGNIZED_PDU, "unrecognized PDU type")
        limit = self.limits.max_pdu_size if pdu_type == P_DATA_TF else MAX_CONTROL_PDU
        if pdu_type == P_DATA_TF and limit:
            limit += 6  # the announced maximum counts the PDVs, not the PDU header
        if limit and length > limit:
            RECEIVE_FAILURES.labels(reason="pdu-too-long").inc()
            raise PeerError(INVALID_PARAMETER, "PDU longer than accepted")
        try:
            async with asyncio.timeout(self.limits.dimse_timeout):
                body = await self.reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise PeerGone from exc
        return pdu_type, body

    def _acknowledge_at_once(self) -> None:
        """Ask the kernel to acknowledge what arrives without delay (TCP_QUICKACK, which
        it clears by itself). Senders that do not set TCP_NODELAY, storescu among them,
        write a PDU's header and its body separately; Nagle's algorithm holds the body
        until the header is acknowledged, and a delayed acknowledgement made each
        C-STORE wait 40 ms."""
        if self.sock is not None and _QUICKACK is not None:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        async with asyncio.timeout(self.limits.network_timeout):
            await self.writer.drain()

    async def run(self) -> None:
        pdu_type, body = await self._read_pdu(self.limits.acse_timeout)
        if pdu_type == ABORT:
            raise PeerGone
        if pdu_type != ASSOCIATE_RQ:
            raise PeerError(UNEXPECTED_PDU, "expected an A-ASSOCIATE-RQ")
        if not await self._associate(body):
            return
        await self._transfer()

    async def _associate(self, body: bytes) -> bool:
        """Answer the A-ASSOCIATE-RQ: AC, or RJ and False."""
        if len(body) < 68:
            raise PeerError(INVALID_PARAMETER, "A-ASSOCIATE-RQ too short")
        version = struct.unpack_from(">H", body, 0)[0]
        request = A_ASSOCIATE_RQ()
        try:
            request.decode(_pdu(ASSOCIATE_RQ, body))
            primitive = request.to_primitive()
        except Exception:
            raise PeerError(INVALID_PARAMETER, "A-ASSOCIATE-RQ malformed") from None
        handler = self.acceptor.handler
        calling = str(primitive.calling_ae_title).strip()
        rejection: tuple[int, int, int] | None = None
        if not version & 1:
            rejection = REJECT_PROTOCOL_VERSION
        elif str(primitive.application_context_name) != APPLICATION_CONTEXT:
            rejection = REJECT_APPLICATION_CONTEXT
        elif not handler.accept_calling_ae(calling):
            RECEIVE_FAILURES.labels(reason="ae-refused").inc()
            rejection = REJECT_CALLING_AE
        elif not handler.admit_association():
            RECEIVE_FAILURES.labels(reason="too-many-associations").inc()
            rejection = REJECT_BUSY
        if rejection is not None:
            log.info("association rejected", extra=log_fields(host=self.host,
                                                              reason=rejection[2]))
            await self._send(reject_pdu(*rejection))
            await self._await_close()
            return False
        self.admitted = True
        association = Association(calling, str(primitive.called_ae_title).strip(), self.host)
        try:
            answer = self._negotiate(primitive, association)
        except Exception:
            raise PeerError(INVALID_PARAMETER, "A-ASSOCIATE-RQ not negotiable") from None
        self.association = association
        await self._send(answer)
        return True

    def _negotiate(self, request: A_ASSOCIATE, association: Association) -> bytes:
        """The encoded A-ASSOCIATE-AC for ``request``; fills in ``association``."""
        roles: dict[Any, tuple[Any, Any]] = {}
        window = False
        for item in request.user_information or []:
            if isinstance(item, MaximumLengthNotification):
                association.peer_max_pdu = int(item.maximum_length_received or 0)
            elif isinstance(item, SCP_SCU_RoleSelectionNegotiation):
                roles[item.sop_class_uid] = (item.scu_role, item.scp_role)
            elif isinstance(item, AsynchronousOperationsWindowNegotiation):
                window = True
        results, role_items = negotiate_as_acceptor(
            request.presentation_context_definition_list, self.acceptor.supported,
            roles or None)
        for context in results:
            if context.result == 0x00 and context.transfer_syntax and context.context_id:
                association.contexts[int(context.context_id)] = (
                    str(context.abstract_syntax), str(context.transfer_syntax[0]))
        answer = A_ASSOCIATE()
        answer.application_context_name = UID(APPLICATION_CONTEXT)
        answer.calling_ae_title = request.calling_ae_title
        answer.called_ae_title = request.called_ae_title
        answer.result = 0x00
        answer.result_source = 0x01
        answer.presentation_context_definition_results_list = results
        maximum = MaximumLengthNotification()
        maximum.maximum_length_received = self.limits.max_pdu_size
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
        version_name = ImplementationVersionNameNotification()
        version_name.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        information: list[Any] = [maximum, implementation, version_name, *role_items]
        if window:  # one operation at a time, each way
            operations = AsynchronousOperationsWindowNegotiation()
            operations.maximum_number_operations_invoked = 1
            operations.maximum_number_operations_performed = 1
            information.append(operations)
        answer.user_information = information
        pdu = A_ASSOCIATE_AC()
        pdu.from_primitive(answer)
        return bytes(pdu.encode())

    async def _await_close(self) -> None:
        """After an A-ASSOCIATE-RJ or A-RELEASE-RP: the peer closes (ARTIM bounds it)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.reader.read(65536), self.limits.acse_timeout)

    async def _transfer(self) -> None:
        """Sta6: P-DATA until a release or an abort."""
        command = bytearray()
        pending: Command | None = None
        context_id = 0
        timeout = self.limits.network_timeout
        while True:
            pdu_type, body = await self._read_pdu(timeout)
            if pdu_type == RELEASE_RQ:
                if self.sink is not None:  # a release in the middle of a data set
                    self.sink.discard()
                    self.sink = None
                await self._send(RELEASE_RP_PDU)
                await self._await_close()
                return
            if pdu_type == ABORT:
                raise PeerGone
            if pdu_type != P_DATA_TF:
                raise PeerError(UNEXPECTED_PDU, "PDU unexpected during the association")
            view = memoryview(body)
            offset = 0
            while offset < len(view):
                if len(view) - offset < 6:
                    raise PeerError(INVALID_PARAMETER, "PDV item truncated")
                length, pdv_context, control = struct.unpack_from(">LBB", view, offset)
                if length < 2 or length > len(view) - offset - 4:
                    raise PeerError(INVALID_PARAMETER, "PDV item length invalid")
                value = view[offset + 6:offset + 4 + length]
                offset += 4 + length
                if self.association is None or pdv_context not in self.association.contexts:
                    raise PeerError(INVALID_PARAMETER, "PDV on a context not accepted")
                is_command, is_last = bool(control & 1), bool(control & 2)
                if is_command:
                    if pending is not None and pending.has_data_set:
                        raise PeerError(UNEXPECTED_PDU, "a command before the data set")
                    if command and pdv_context != context_id:
                        raise PeerError(INVALID_PARAMETER, "command fragments across contexts")
                    context_id = pdv_context
                    command += value
                    if len(command) > MAX_COMMAND_BYTES:
                        raise PeerError(INVALID_PARAMETER, "command set too long")
                    if is_last:
                        pending = decode_command(bytes(command))
                        command.clear()
                        pending = await self._begin(pending, context_id)
                else:
                    if pending is None or not pending.has_data_set or pdv_context != context_id:
                        raise PeerError(UNEXPECTED_PDU, "a data set without its command")
                    if self.sink is not None:
                        self.sink.write(value)
                    if is_last:
                        await self._complete(pending, context_id)
                        pending = None
            # Waiting for the rest of a message, or for the next one.
            timeout = (self.limits.dimse_timeout if command or pending is not None
                       else self.limits.network_timeout)

    async def _begin(self, command: Command, context_id: int) -> Command | None:
        """A complete command: answer it now, or keep it pending for its data set."""
        assert self.association is not None
        abstract, syntax = self.association.contexts[context_id]
        if command.field == C_ECHO_RQ:
            await self._respond(context_id, encode_response(
                C_ECHO_RSP, command.message_id, SUCCESS, VERIFICATION))
            return None
        if command.field == C_STORE_RQ and command.has_data_set:
            if command.sop_class_uid != abstract:
                self.status = SOP_CLASS_NOT_SUPPORTED
            else:
                started = self.acceptor.handler.begin_store(self.association, command, syntax)
                if isinstance(started, int):
                    self.status = started
                else:
                    self.sink = started
                    self.status = None
            return command
        if command.field & 0x8000:
            raise PeerError(UNEXPECTED_PDU, "a response sent to the acceptor")
        if command.has_data_set:
            raise PeerError(UNEXPECTED_PDU, "an operation this SCP does not perform")
        await self._respond(context_id, encode_response(
            command.field | 0x8000, command.message_id, UNRECOGNIZED_OPERATION, abstract))
        return None

    async def _complete(self, command: Command, context_id: int) -> None:
        """The data set of a C-STORE arrived whole: keep it, answer its status."""
        status = self.status
        if self.sink is not None:
            sink, self.sink = self.sink, None
            status = await sink.finish()
        await self._respond(context_id, encode_response(
            C_STORE_RSP, command.message_id, SUCCESS if status is None else status,
            command.sop_class_uid, command.sop_instance_uid))

    async def _respond(self, context_id: int, command: bytes) -> None:
        """Send a command set in as many P-DATA-TF PDUs as the peer's maximum needs."""
        assert self.association is not None
        room = self.association.peer_max_pdu - 6 if self.association.peer_max_pdu else 0
        if room <= 0 or room >= len(command):
            fragments = [command]
        else:
            fragments = [command[at:at + room] for at in range(0, len(command), room)]
        out = bytearray()
        for number, fragment in enumerate(fragments):
            control = 0x03 if number == len(fragments) - 1 else 0x01
            item = struct.pack(">LBB", len(fragment) + 2, context_id, control) + fragment
            out += _pdu(P_DATA_TF, item)
        await self._send(bytes(out))

