"""DICOM upper layer PDUs built by hand (PS3.8 9.3) and a raw-socket peer, for tests that
talk to an SCP's TCP port without a DICOM library in between: conformance tests that send
exactly the bytes PS3.8 describes (or deliberately wrong ones), and the fuzzing test.

Everything is big endian as PS3.8 says, except DIMSE command sets (PS3.7 6.3.1: implicit
VR little endian)."""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLEMENTATION_CLASS = "1.2.826.0.1.3680043.9.3811.99"

# PDU types (PS3.8 9.3.1)
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07
SCP_PDU_TYPES = frozenset({ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF, RELEASE_RP, ABORT})

# DIMSE command fields (PS3.7 E.1)
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030


# ---- PDUs ------------------------------------------------------------------------------


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def presentation_context(context_id: int, abstract_syntax: str,
                         transfer_syntaxes: list[str]) -> bytes:
    """A presentation context item of an A-ASSOCIATE-RQ (PS3.8 9.3.2.2)."""
    body = bytes([context_id, 0, 0, 0]) + item(0x30, abstract_syntax.encode())
    for syntax in transfer_syntaxes:
        body += item(0x40, syntax.encode())
    return item(0x20, body)


def user_information(max_length: int = 16384, window: tuple[int, int] | None = None) -> bytes:
    """User information (PS3.8 9.3.2.3, PS3.7 D.3.3): maximum length, implementation
    class UID, and optionally an asynchronous operations window (invoked, performed)."""
    body = item(0x51, struct.pack(">L", max_length)) + item(0x52, IMPLEMENTATION_CLASS.encode())
    if window is not None:
        body += item(0x53, struct.pack(">HH", *window))
    return item(0x50, body)


def associate_rq(contexts: list[tuple[int, str, list[str]]], called: str = "ANONSCP",
                 calling: str = "TESTSCU", max_length: int = 16384,
                 window: tuple[int, int] | None = None, version: int = 1) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) proposing ``contexts`` (id, abstract syntax,
    transfer syntaxes)."""
    body = (struct.pack(">HH", version, 0) + called.ljust(16).encode()
            + calling.ljust(16).encode() + bytes(32) + item(0x10, APPLICATION_CONTEXT.encode()))
    for context_id, abstract, syntaxes in contexts:
        body += presentation_context(context_id, abstract, syntaxes)
    return pdu(ASSOCIATE_RQ, body + user_information(max_length, window))


def p_data(context_id: int, value: bytes, command: bool, last: bool) -> bytes:
    """A P-DATA-TF PDU with one presentation data value (PS3.8 9.3.5, E.2)."""
    header = (1 if command else 0) | (2 if last else 0)
    pdv = struct.pack(">LBB", len(value) + 2, context_id, header) + value
    return pdu(P_DATA_TF, pdv)


def fragments(context_id: int, value: bytes, max_length: int, command: bool) -> list[bytes]:
    """``value`` as P-DATA-TF PDUs whose variable field is at most ``max_length``."""
    room = max_length - 6
    pieces = [value[i:i + room] for i in range(0, len(value), room)] or [b""]
    return [p_data(context_id, piece, command, n == len(pieces) - 1)
            for n, piece in enumerate(pieces)]


def release_rq() -> bytes:
    return pdu(RELEASE_RQ, bytes(4))


def release_rp() -> bytes:
    return pdu(RELEASE_RP, bytes(4))


def abort(source: int = 0, reason: int = 0) -> bytes:
    return pdu(ABORT, bytes([0, 0, source, reason]))


# ---- DIMSE commands (PS3.7 9.3, E.1) -----------------------------------------------------


def _element(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", group, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def command_set(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(_element(0x0000, tag, value) for tag, value in elements)
    return _element(0x0000, 0x0000, struct.pack("<L", len(body))) + body


def c_echo_rq(message_id: int = 1) -> bytes:
    return command_set([(0x0002, _uid(VERIFICATION)), (0x0100, struct.pack("<H", C_ECHO_RQ)),
                        (0x0110, struct.pack("<H", message_id)),
                        (0x0800, struct.pack("<H", 0x0101))])


def c_store_rq(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    return command_set([(0x0002, _uid(sop_class)), (0x0100, struct.pack("<H", C_STORE_RQ)),
                        (0x0110, struct.pack("<H", message_id)),
                        (0x0700, struct.pack("<H", 0)), (0x0800, struct.pack("<H", 0)),
                        (0x1000, _uid(sop_instance))])


def command_fields(data: bytes) -> dict[int, bytes]:
    """The elements of an implicit VR little endian command set, by element number."""
    fields: dict[int, bytes] = {}
    offset = 0
    while offset + 8 <= len(data):
        _, element, length = struct.unpack_from("<HHL", data, offset)
        fields[element] = data[offset + 8:offset + 8 + length]
        offset += 8 + length
    return fields


@dataclass
class Response:
    """A DIMSE response read back: its command field and status."""

    command_field: int
    status: int


def data_set_bytes(part10: bytes) -> bytes:
    """The data set of a PS3.10 file: what follows its file meta group (whose group
    length is the first element after the preamble and ``DICM``)."""
    if part10[128:132] != b"DICM":
        raise ValueError("not a PS3.10 file")
    (group_length,) = struct.unpack_from("<L", part10, 132 + 8)
    return part10[132 + 12 + group_length:]


def encoded(dataset: Dataset) -> bytes:
    """``dataset`` encoded in its file meta's transfer syntax, without the file meta."""
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return data_set_bytes(buffer.getvalue())


# ---- a peer on a raw socket ------------------------------------------------------------


class Closed(Exception):
    """The SCP closed the connection."""


@dataclass
class Accepted:
    """What an A-ASSOCIATE-AC said: each context's result and transfer syntax, the
    SCP's maximum length and its asynchronous operations window (None: not answered)."""

    results: dict[int, tuple[int, str]] = field(default_factory=dict)
    max_length: int = 0
    window: tuple[int, int] | None = None


def _items(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 4 <= len(data):
        kind, _, length = struct.unpack_from(">BBH", data, offset)
        yield kind, data[offset + 4:offset + 4 + length]
        offset += 4 + length


def parse_associate_ac(body: bytes) -> Accepted:
    accepted = Accepted()
    for kind, value in _items(body[68:]):
        if kind == 0x21:
            syntax = next((v.decode().rstrip("\0 ") for k, v in _items(value[4:]) if k == 0x40),
                          "")
            accepted.results[value[0]] = (value[2], syntax)
        elif kind == 0x50:
            for sub, sub_value in _items(value):
                if sub == 0x51:
                    (accepted.max_length,) = struct.unpack(">L", sub_value)
                elif sub == 0x53:
                    accepted.window = struct.unpack(">HH", sub_value)
    return accepted


class Peer:
    """One TCP connection to the SCP, speaking PDUs; every read has ``timeout`` seconds
    (a socket.timeout / TimeoutError means the SCP neither answered nor closed)."""

    def __init__(self, port: int, timeout: float = 5.0, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exactly(self, count: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < count:
            try:
                chunk = self.sock.recv(count - len(chunks))
            except ConnectionResetError:
                raise Closed() from None
            if not chunk:
                raise Closed()
            chunks += chunk
        return bytes(chunks)

    def receive(self) -> tuple[int, bytes]:
        """The next PDU (type, body); raises :class:`Closed` at the end of the stream."""
        pdu_type, _, length = struct.unpack(">BBL", self._exactly(6))
        return pdu_type, self._exactly(length)

    def associate(self, contexts: list[tuple[int, str, list[str]]], **options: object
                  ) -> Accepted:
        self.send(associate_rq(contexts, **options))  # type: ignore[arg-type]
        pdu_type, body = self.receive()
        assert pdu_type == ASSOCIATE_AC, (pdu_type, body[:16])
        return parse_associate_ac(body)

    def response(self) -> Response:
        """Read P-DATA until a complete command set; its command field and status."""
        command = b""
        while True:
            pdu_type, body = self.receive()
            assert pdu_type == P_DATA_TF, f"PDU type {pdu_type:#x} instead of a response"
            offset = 0
            last = False
            while offset < len(body):
                (length,) = struct.unpack_from(">L", body, offset)
                header = body[offset + 5]
                command += body[offset + 6:offset + 4 + length]
                last = bool(header & 2)
                offset += 4 + length
            if last:
                fields = command_fields(command)
                return Response(struct.unpack("<H", fields[0x0100])[0],
                                struct.unpack("<H", fields.get(0x0900, b"\xff\xff"))[0])

    def echo(self, context_id: int = 1, message_id: int = 1) -> Response:
        self.send(p_data(context_id, c_echo_rq(message_id), command=True, last=True))
        return self.response()

    def store(self, context_id: int, sop_class: str, sop_instance: str, data_set: bytes,
              max_length: int, message_id: int = 1) -> Response:
        self.send(p_data(context_id, c_store_rq(sop_class, sop_instance, message_id),
                         command=True, last=True))
        for piece in fragments(context_id, data_set, max_length, command=False):
            self.send(piece)
        return self.response()

    def release(self) -> None:
        """A-RELEASE-RQ; asserts the A-RELEASE-RP (PS3.8 7.2)."""
        self.send(release_rq())
        pdu_type, _ = self.receive()
        assert pdu_type == RELEASE_RP, f"PDU type {pdu_type:#x} instead of A-RELEASE-RP"

    def ending(self, within: float) -> list[tuple[int, bytes]]:
        """The PDUs the SCP sends until it closes the connection; raises TimeoutError if
        it is still open after ``within`` seconds."""
        deadline = time.monotonic() + within
        seen: list[tuple[int, bytes]] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"still open after {within} s; PDUs: {seen}")
            self.sock.settimeout(left)
            try:
                seen.append(self.receive())
            except Closed:
                return seen
            except TimeoutError:
                raise TimeoutError(f"still open after {within} s; PDUs: {seen}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def vanish(self) -> None:
        """Close at once with a TCP reset (no FIN, no A-ABORT): a peer that disappears."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()
