"""Sending fetched objects to the destination by C-STORE, in a worker thread.

pynetdicom blocks, so one thread runs the associations while the event loop fetches the
next objects from the store (:class:`Handoff`, bounded so that a large patient never
fills the disk). Files are sent as stored, in their transfer syntax, without decoding
(pynetdicom's chunked sending reads the file meta and streams the rest). The presentation
contexts proposed are every (SOP class, transfer syntax) pair the objects need: pairs not
seen yet are predicted (the SOP classes of the patient, from the index, with every transfer
syntax seen so far), and an object needing a pair that was not proposed makes the thread
open a new association with it (at most 128 pairs each, as PS3.8 allows).

Each object's outcome is reported at once through a callback (the event loop records them
in batches). A round ends when every object was handled, or early on a temporary failure
(no association, association aborted or rejected transient, out of resources, a timeout:
worth a retry) or a permanent rejection of the association (nothing can be sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.association import Association

from shared.dimse.association import set_nodelay
from shared.export.destination import Destination
from shared.export.meta import (
    is_out_of_resources,
    is_warning,
    status_meaning,
    uid_name,
)
from shared.observability.logging import quiet_pynetdicom

MAX_CONTEXTS = 128  # PS3.8: odd presentation context IDs 1 to 255
Pair = tuple[str, str]  # (SOP class UID, transfer syntax UID)

# PS3.8 7.1.1.9: A-ASSOCIATE-RJ result source and reason.
_REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title {calling} not recognised",
    (1, 7): "called AE title {called} not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


@dataclass(frozen=True)
class Outgoing:
    """A fetched object waiting to be sent: its instance row, file and file meta."""

    instance: int
    path: Path
    sop_class: str
    transfer_syntax: str

    @property
    def pair(self) -> Pair:
        """The presentation context it needs."""
        return (self.sop_class, self.transfer_syntax)


@dataclass(frozen=True)
class Outcome:
    """What became of one object: accepted (possibly with a warning) or failed for good."""

    instance: int
    accepted: bool
    reason: str = ""
    warning: bool = False


@dataclass(frozen=True)
class RoundEnd:
    """Why a round stopped: ``temporary`` (retry later) or ``permanent`` (the association
    itself is refused); neither when every object was handled."""

    temporary: str | None = None
    permanent: str | None = None


class _Temporary(Exception):
    """Stops a round: try again later."""


class _Permanent(Exception):
    """Stops a round: the destination refuses us for good."""


class _Checkpoint(threading.Event):
    """pynetdicom's reactor checkpoint, kept cleared between our C-STOREs.

    ``send_c_store`` pauses the association's reactor thread (clear, then wait until it
    says it is paused) and lets it run again at the end. The reactor says "paused" just
    before it waits, so it can pass a wait that has not been cleared yet, run once more,
    and take the C-STORE response off the queue: the C-STORE then waits for nothing until
    its timeout (about 1 in 3,000 objects here, more on a loaded machine). Installed
    before the association starts, cleared, with the one ``set`` at the end of each of our
    C-STOREs swallowed (``hold``), the reactor stays paused while we send; every other
    ``set`` (abort, kill, release) goes through."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False

    def set(self) -> None:
        if self.hold:
            self.hold = False
            return
        super().set()


def _connection_opened(event: evt.Event) -> None:
    """``EVT_CONN_OPEN``: TCP_NODELAY and a short DUL poll (shared/dimse), and the
    checkpoint that keeps the reactor paused between C-STOREs."""
    set_nodelay(event)
    event.assoc._reactor_checkpoint = _Checkpoint()


class Handoff:
    """Objects fetched by the event loop for the sending thread, at most ``capacity``
    fetched ahead. The loop calls :meth:`reserve` before fetching, :meth:`put` or
    :meth:`unreserve` after, and :meth:`finish` at the end; the thread calls :meth:`get`,
    and :meth:`close` when it stops taking objects."""

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int) -> None:
        self._loop = loop
        self._capacity = capacity
        self._space = asyncio.Semaphore(capacity)
        self._items: deque[Outgoing] = deque()
        self._ready = threading.Condition()
        self._finished = False
        self.closed = False

    async def reserve(self) -> bool:
        """Wait for room for one more object; False once the thread stopped taking them."""
        if self.closed:
            return False
        await self._space.acquire()
        if self.closed:
            self._space.release()
            return False
        return True

    def unreserve(self) -> None:
        """Give back a reservation whose object could not be fetched."""
        self._space.release()

    def put(self, item: Outgoing) -> None:
        """Hand a fetched object to the thread (after :meth:`reserve`)."""
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def finish(self) -> None:
        """Nothing more will be put."""
        with self._ready:
            self._finished = True
            self._ready.notify_all()

    def get(self, stop: threading.Event) -> Outgoing | None:
        """The next object (thread side); None when there is none left or ``stop`` is set."""
        with self._ready:
            while not self._items and not self._finished and not stop.is_set():
                self._ready.wait(0.2)
            if stop.is_set() or not self._items:
                return None
            item = self._items.popleft()
        self._loop.call_soon_threadsafe(self._space.release)
        return item

    def waiting(self) -> list[Outgoing]:
        """The objects fetched and not yet taken (thread side)."""
        with self._ready:
            return list(self._items)

    def close(self) -> None:
        """The thread takes no more objects: wake every fetcher waiting for room."""
        self.closed = True
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            self._loop.call_soon_threadsafe(self._wake_fetchers)

    def _wake_fetchers(self) -> None:
        for _ in range(self._capacity):
            self._space.release()


class Sender:
    """One round of sending (call :meth:`run` in a worker thread). ``rejected`` holds the
    pairs the destination refused so far; it is shared across rounds of one export."""

    def __init__(
        self,
        destination: Destination,
        sop_classes: Sequence[str],
        report: Callable[[Outcome], None],
        stop: threading.Event,
        rejected: set[Pair],
    ) -> None:
        self.destination = destination
        # The SOP classes the index names (to predict pairs): only well-formed UIDs.
        self.sop_classes = [c for c in dict.fromkeys(sop_classes) if c and UID(c).is_valid]
        self.report = report
        self.stop = stop
        self.rejected = rejected
        self._seen: dict[Pair, None] = {}
        self._syntaxes: dict[str, None] = {}
        self._message_id = 0
        self.associations = 0

    def run(self, handoff: Handoff) -> RoundEnd:
        """Send every object the handoff gives until it is empty, or until a failure ends
        the round; the handoff is closed on return."""
        quiet_pynetdicom()
        # Send a file as stored: its file meta is read, its data set streamed, not decoded.
        _config.STORE_SEND_CHUNKED_DATASET = True
        ae = AE(ae_title=self.destination.calling_ae)
        timeout = self.destination.timeout
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        ae.connection_timeout = timeout
        assoc: Association | None = None
        proposed: set[Pair] = set()
        accepted: set[Pair] = set()
        try:
            while True:
                item = handoff.get(self.stop)
                if item is None:
                    return RoundEnd(temporary="stopped" if self.stop.is_set() else None)
                pair = item.pair
                self._note(pair)
                if pair not in self.rejected and (
                        assoc is None or not assoc.is_established or pair not in proposed):
                    _close(assoc)
                    assoc = None
                    proposal = self._proposal(pair, handoff.waiting())
                    assoc, accepted = self._associate(ae, proposal)
                    proposed = set(proposal)
                    self.rejected.update(proposed - accepted)
                if pair in self.rejected or assoc is None:
                    self._done(item, Outcome(item.instance, False, self._context_reason(pair)))
                    continue
                self._done(item, self._store(assoc, item))
        except _Temporary as exc:
            return RoundEnd(temporary=str(exc))
        except _Permanent as exc:
            return RoundEnd(permanent=str(exc))
        finally:
            handoff.close()
            _close(assoc)

    # -- presentation contexts and associations -----------------------------------------

    def _note(self, pair: Pair) -> None:
        self._seen[pair] = None
        self._syntaxes[pair[1]] = None

    def _proposal(self, needed: Pair, waiting: list[Outgoing]) -> list[Pair]:
        """The pair needed now, those of the objects fetched ahead, those seen before, then
        every SOP class of the export with every transfer syntax seen so far; without the
        pairs already refused, at most 128."""
        for item in waiting:
            self._syntaxes[item.transfer_syntax] = None
        candidates = [needed, *(i.pair for i in waiting), *self._seen,
                      *((c, t) for c in self.sop_classes for t in self._syntaxes)]
        chosen: dict[Pair, None] = {}
        for pair in candidates:
            if pair not in self.rejected and pair not in chosen:
                chosen[pair] = None
                if len(chosen) == MAX_CONTEXTS:
                    break
        return list(chosen)

    def _associate(
        self, ae: AE, proposal: list[Pair]
    ) -> tuple[Association | None, set[Pair]]:
        """An association proposing ``proposal``, and the pairs accepted. (None, empty)
        when the destination accepted the association but none of the pairs."""
        where = self.destination.describe()
        contexts = [build_context(sop, [syntax]) for sop, syntax in proposal]
        assoc = ae.associate(self.destination.host, self.destination.port, contexts,
                             ae_title=self.destination.called_ae,
                             evt_handlers=[(evt.EVT_CONN_OPEN, _connection_opened)])
        self.associations += 1
        if assoc.is_established:
            return assoc, {(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                           for cx in assoc.accepted_contexts}
        answer = assoc.acceptor.primitive
        result = getattr(answer, "result", None)
        if assoc.is_rejected and answer is not None:
            source = int(getattr(answer, "result_source", 0) or 0)
            diagnostic = int(getattr(answer, "diagnostic", 0) or 0)
            reason = _REJECT_REASONS.get((source, diagnostic), f"reason {source}/{diagnostic}")
            reason = reason.format(called=self.destination.called_ae,
                                   calling=self.destination.calling_ae)
            if result == 0x01:
                raise _Permanent(f"{where} rejected the association permanently: {reason}")
            raise _Temporary(f"{where} rejected the association for now: {reason}")
        if result == 0x00 and assoc.rejected_contexts:
            return None, set()  # accepted, but no presentation context: every pair refused
        raise _Temporary(f"no association with {where}: the connection was refused, timed "
                         f"out or aborted")

    def _context_reason(self, pair: Pair) -> str:
        sop, syntax = pair
        return (f"{self.destination.describe()} does not accept {uid_name(sop)} in "
                f"{uid_name(syntax)} (presentation context rejected)")

    # -- one C-STORE ----------------------------------------------------------------------

    def _store(self, assoc: Association, item: Outgoing) -> Outcome:
        where = self.destination.describe()
        if assoc.acse.is_aborted() or not assoc.dul.is_alive():  # the reactor is paused
            raise _Temporary(f"the association with {where} was aborted")
        self._message_id = self._message_id % 0xFFFF + 1
        checkpoint = assoc._reactor_checkpoint
        if isinstance(checkpoint, _Checkpoint):
            checkpoint.hold = True
        try:
            status = assoc.send_c_store(item.path, msg_id=self._message_id)
        except RuntimeError as exc:  # the association ended under us
            raise _Temporary(f"the association with {where} ended during a C-STORE") from exc
        except (AttributeError, ValueError) as exc:
            return Outcome(item.instance, False,
                           f"the stored object cannot be sent ({type(exc).__name__})")
        finally:
            if isinstance(checkpoint, _Checkpoint):
                checkpoint.hold = False
        code = status.get("Status") if status else None
        if code is None:
            raise _Temporary(f"no answer from {where} to a C-STORE within "
                             f"{self.destination.timeout:g} s, or the association was aborted")
        code = int(code)
        if code == 0x0000:
            return Outcome(item.instance, True)
        meaning = status_meaning(code)
        if is_warning(code):
            return Outcome(item.instance, True, f"C-STORE status 0x{code:04X} ({meaning})",
                           warning=True)
        if is_out_of_resources(code):
            raise _Temporary(f"{where} is out of resources (C-STORE status 0x{code:04X})")
        return Outcome(item.instance, False,
                       f"{where} refused {uid_name(item.sop_class)} in "
                       f"{uid_name(item.transfer_syntax)}: C-STORE status 0x{code:04X} "
                       f"({meaning})")

    def _done(self, item: Outgoing, outcome: Outcome) -> None:
        with contextlib.suppress(OSError):
            os.unlink(item.path)
        self.report(outcome)


def _close(assoc: Association | None) -> None:
    if assoc is None:
        return
    if assoc.is_established:
        try:
            assoc.release()
        except Exception:  # a peer gone at release: abort instead
            assoc.abort()
    elif assoc.is_alive():
        assoc.abort()
