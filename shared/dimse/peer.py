"""A remote application entity (a PACS) we talk to as an SCU, the errors it can give us in an
operator's words, and the association with it.

Every failure becomes a :class:`DimseError` whose message names the peer (AE title, host,
port) and the DICOM status or rejection reason, so that whoever reads a job's error knows
what to fix on which side, and never holds PHI: the identifiers of a query or retrieve stay
out of messages and logs (pynetdicom is told not to log them).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.pdu_primitives import A_ASSOCIATE

from shared.dimse.association import set_nodelay
from shared.observability.logging import quiet_pynetdicom

# How long a second, plain TCP connection may take when the association could not connect
# and we look for the reason (refused, unreachable, no such host).
PROBE_SECONDS = 5.0


@dataclass(frozen=True)
class Peer:
    """Where a PACS listens and the AE titles of both sides; ``timeout`` (seconds) bounds
    the TCP connection, the association negotiation and each wait for a DIMSE message."""

    host: str
    port: int
    called_aet: str
    calling_aet: str
    timeout: float = 30.0

    def describe(self) -> str:
        """The peer as an operator knows it (never PHI)."""
        return f"{self.called_aet} at {self.host}:{self.port}"


class DimseError(Exception):
    """A peer could not do what was asked; the message is in an operator's words, names the
    peer (AE title, host, port) and a DICOM status where there is one, and never holds PHI
    (no patient names, IDs, accession numbers, UIDs of patients' studies)."""


class PeerUnreachable(DimseError):
    """No TCP connection (refused, host unreachable, no such host, a timeout), or no answer
    to the association request: worth trying again later."""


class ConnectionLost(PeerUnreachable):
    """The association was established, then the connection closed, the peer aborted it or
    stopped answering (a DIMSE timeout) before the operation finished."""


class AssociationRefused(DimseError):
    """The peer answered A-ASSOCIATE-RJ, aborted during negotiation, or accepted none of the
    presentation contexts we proposed."""


class PeerFailed(DimseError):
    """The peer answered the request with a failure status (``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TooManyMatches(DimseError):
    """A query matched more than the caller accepts."""


class OperationTimeout(DimseError):
    """An operation (a retrieve) did not finish within the time given to it; the
    association was aborted."""


# PS3.8 Table 9-21: A-ASSOCIATE-RJ result source -> diagnostic -> meaning.
_REJECT_REASONS: dict[int, dict[int, str]] = {
    1: {1: "no reason given", 2: "application context name not supported",
        3: "calling AE title not recognised", 7: "called AE title not recognised"},
    2: {1: "no reason given", 2: "protocol version not supported"},
    3: {1: "temporary congestion", 2: "local limit exceeded"},
}


def status_text(code: int, table: dict[int, tuple[str, str]]) -> str:
    """``code`` as ``"status A700 (Refused: Out of Resources)"`` using one of pynetdicom's
    status tables (the meaning is left out when the table has none)."""
    meaning = table.get(code, ("", ""))[1]
    return f"status {code:04X}" + (f" ({meaning})" if meaning else "")


def new_ae(peer: Peer) -> AE:
    """An AE with our calling AE title and the peer's timeouts (contexts still to add)."""
    quiet_pynetdicom()
    ae = AE(ae_title=peer.calling_aet)
    ae.connection_timeout = peer.timeout
    ae.acse_timeout = peer.timeout
    ae.dimse_timeout = peer.timeout
    ae.network_timeout = peer.timeout
    return ae


def _unreachable_reason(peer: Peer) -> str:
    """Why a plain TCP connection to the peer fails, in a few words."""
    try:
        with socket.create_connection((peer.host, peer.port),
                                      timeout=min(peer.timeout, PROBE_SECONDS)):
            return "the connection was closed at once"
    except ConnectionRefusedError:
        return "connection refused"
    except socket.gaierror:
        return "no such host name"
    except TimeoutError:
        return "no answer to the TCP connection"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _association_answer(assoc: Association) -> A_ASSOCIATE | None:
    """The peer's A-ASSOCIATE-AC or -RJ. pynetdicom may not have read it: when the peer
    rejects and closes the connection before the requesting thread looks, that thread takes
    the closed socket for a failed connection and aborts, leaving the answer queued."""
    answer: A_ASSOCIATE | None = assoc.acceptor.primitive
    if answer is not None:
        return answer
    for item in list(assoc.dul.to_user_queue.queue):
        if isinstance(item, A_ASSOCIATE) and item.result is not None:
            return item
    return None


def _negotiation_failure(peer: Peer, assoc: Association, connected: bool,
                         waited: float) -> DimseError:
    if not connected:
        return PeerUnreachable(
            f"the PACS {peer.describe()} did not answer ({_unreachable_reason(peer)})")
    answer = _association_answer(assoc)
    if answer is not None and answer.result in (1, 2):
        source = int(answer.result_source or 0)
        diagnostic = int(answer.diagnostic or 0)
        reason = _REJECT_REASONS.get(source, {}).get(diagnostic, f"reason {source}/{diagnostic}")
        kind = "for now" if answer.result == 2 else "permanently"
        hint = ""
        if source == 1 and diagnostic == 7:
            hint = f"; check the AE title configured for it ({peer.called_aet})"
        elif source == 1 and diagnostic == 3:
            hint = f"; the PACS must know our AE title {peer.calling_aet}"
        return AssociationRefused(
            f"the PACS {peer.describe()} rejected the association {kind}: {reason}{hint}")
    if answer is not None and answer.result == 0:
        return AssociationRefused(
            f"the PACS {peer.describe()} accepted none of the services we proposed "
            f"(no presentation context accepted)")
    if waited >= 0.9 * peer.timeout:
        return PeerUnreachable(
            f"the PACS {peer.describe()} took the connection but did not answer the "
            f"association request within {peer.timeout:g} s")
    return AssociationRefused(
        f"the PACS {peer.describe()} aborted or closed the association during negotiation "
        f"(is {peer.called_aet} the right AE title, and does it accept {peer.calling_aet}?)")


def _keep_responses_from_reactor(assoc: Association) -> None:
    """Stop the association's reactor thread from taking DIMSE messages off the queue.

    pynetdicom pauses its reactor before each request, but the pause can be taken for done
    while the reactor is past its checkpoint: it then takes the first response (a C-FIND
    match, a C-MOVE pending response) off the queue and drops it as an unexpected
    message (one match in a few hundred went missing on loopback). As an SCU every message
    we get is the response to a request of ours, read by the blocking generators; the
    reactor's non-blocking reads get nothing, and an unsolicited request stays queued for
    the next read, which aborts on it.
    """
    dimse = assoc.dimse
    blocking_read = dimse.get_msg

    def get_msg(block: bool = False) -> Any:
        return blocking_read(block=True) if block else (None, None)

    dimse.get_msg = get_msg  # type: ignore[method-assign]


@contextmanager
def open_association(
    peer: Peer,
    ae: AE,
    *,
    ext_neg: Sequence[Any] | None = None,
    evt_handlers: Sequence[EventHandlerType] | None = None,
) -> Iterator[Association]:
    """An association with ``peer`` using ``ae``'s requested contexts, with Nagle off: a
    failure to associate is raised as :class:`PeerUnreachable` or
    :class:`AssociationRefused` naming the reason; the association is released when the
    block ends, or aborted when it raises (a half-done operation must not look finished)."""
    quiet_pynetdicom()
    connected = threading.Event()

    def on_open(event: evt.Event) -> None:
        connected.set()
        set_nodelay(event)
        _keep_responses_from_reactor(event.assoc)

    handlers: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, on_open), *(evt_handlers or [])]
    clock = Stopwatch()
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.called_aet,
                         ext_neg=list(ext_neg) if ext_neg else None, evt_handlers=handlers)
    if not assoc.is_established:
        raise _negotiation_failure(peer, assoc, connected.is_set(), clock.lap())
    try:
        yield assoc
    except BaseException:
        abort(assoc)
        raise
    if assoc.is_established:
        assoc.release()


def abort(assoc: Association) -> None:
    """Abort ``assoc`` if it is still up, and wake whoever waits for its next message."""
    if assoc.is_established:
        assoc.abort()
    assoc.dimse.msg_queue.put((None, None))


def lost(peer: Peer, waited: float, limit: float | None = None) -> ConnectionLost:
    """The error for an association that ended while we waited ``waited`` seconds for a
    response: a DIMSE timeout when that reached ``limit`` (default ``peer.timeout``), else a
    closed connection or an abort."""
    limit = peer.timeout if limit is None else limit
    if waited >= 0.9 * limit:
        return ConnectionLost(f"the PACS {peer.describe()} stopped answering "
                              f"(no response within {limit:g} s)")
    return ConnectionLost(f"the connection to the PACS {peer.describe()} was closed "
                          "or aborted before it answered")


class Stopwatch:
    """Seconds since the last :meth:`lap` (the time we have waited for a response)."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def lap(self) -> float:
        now = time.monotonic()
        waited, self._last = now - self._last, now
        return waited
