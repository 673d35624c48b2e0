"""An in-process broker for the single-process embedded mode and for tests.

Queues live in memory (nothing survives the process) but behave like the RabbitMQ
topology: a message is acknowledged when its handler returns; when the handler raises it
goes back to its queue after the topology's growing delay (:meth:`Topology.delay_after`),
when the handler is cancelled at once, and it is moved to the dead-letter queue once it
has been delivered ``max_deliveries`` times without success. With a ``dependencies``
check, failures while a dependency is down are not counted and the consumers pause until
it answers (:mod:`shared.messaging.retry`). Each consumer has at most ``prefetch``
messages in flight. Bodies are copied through JSON, so handlers see exactly what a
RabbitMQ consumer would.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from shared.messaging.base import (
    BrokerUnavailable,
    Handler,
    Message,
    decode_body,
    encode_body,
)
from shared.messaging.retry import DependencyCheck, DependencyGate
from shared.messaging.topology import DEAD_LETTER, QUEUES, WORK_QUEUES, Topology

log = logging.getLogger(__name__)


@dataclass
class _Envelope:
    """A queued message and how often it has been delivered."""

    payload: bytes
    correlation_id: str
    message_id: str
    origin: str
    deliveries: int = 0

    def message(self, queue: str) -> Message:
        return Message(
            body=decode_body(self.payload),
            correlation_id=self.correlation_id,
            delivery_count=self.deliveries,
            queue=queue,
            message_id=self.message_id,
        )


class _Queue:
    """Ready messages in order, with waiting consumers served first-come first-served."""

    def __init__(self) -> None:
        self.ready: deque[_Envelope] = deque()
        self._waiters: deque[asyncio.Future[_Envelope]] = deque()

    def put(self, envelope: _Envelope, *, front: bool = False) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(envelope)
                return
        if front:
            self.ready.appendleft(envelope)
        else:
            self.ready.append(envelope)

    async def get(self) -> _Envelope:
        if self.ready:
            return self.ready.popleft()
        waiter: asyncio.Future[_Envelope] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed over just before the cancellation: give it back.
                self.put(waiter.result(), front=True)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise


class MemoryConsumer:
    """A handler attached to one in-memory queue, at most ``prefetch`` messages at a time."""

    def __init__(
        self, broker: MemoryBroker, queue: str, handler: Handler, prefetch: int, grace: float
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._handler = handler
        self._slots = asyncio.Semaphore(prefetch)
        self._grace = grace
        self._running: set[asyncio.Task[None]] = set()
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"consume {queue}")
        self._cancelled = False

    async def _dispatch(self) -> None:
        queue = self._broker._queues[self._queue]
        while True:
            await self._slots.acquire()
            try:
                envelope = await queue.get()
            except BaseException:
                self._slots.release()
                raise
            started: list[bool] = []
            task = asyncio.create_task(self._deliver(envelope, started))
            self._running.add(task)
            task.add_done_callback(functools.partial(self._finished, envelope, started))

    def _finished(self, envelope: _Envelope, started: list[bool], task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()
        if not started:
            # Cancelled before the handler was even called: not a delivery.
            self._broker._queues[self._queue].put(envelope, front=True)

    async def _deliver(self, envelope: _Envelope, started: list[bool]) -> None:
        started.append(True)
        envelope.deliveries += 1
        message = envelope.message(self._queue)
        gate = self._broker._gate
        try:
            while True:
                await gate.wait_open()
                try:
                    await self._handler(message)
                    return
                except Exception as exc:
                    if not await gate.outage():
                        raise
                    log.warning(
                        "handler for %s failed during an outage (%s); message %s waits",
                        self._queue, type(exc).__name__, envelope.message_id,
                    )
        except asyncio.CancelledError:
            self._broker._return(envelope, self._queue, "handler cancelled")
            raise
        except Exception as exc:
            # Only the exception's type: its text could quote identifying data.
            log.warning(
                "handler for %s failed on delivery %d of %d of message %s: %s",
                self._queue,
                envelope.deliveries,
                self._broker.topology.max_deliveries,
                envelope.message_id,
                type(exc).__name__,
            )
            log.debug("handler failure", exc_info=True)
            self._broker._return(envelope, self._queue, "handler failed")

    async def cancel(self) -> None:
        """Stop taking messages, wait up to the grace period for running handlers, cancel the rest.

        Messages whose handlers are cancelled go back to their queue (delivery counted).
        """
        if self._cancelled:
            return
        self._cancelled = True
        self._broker._consumers.discard(self)
        self._dispatcher.cancel()
        await asyncio.gather(self._dispatcher, return_exceptions=True)
        others = self._running - {asyncio.current_task()}
        if others:
            _, pending = await asyncio.wait(others, timeout=self._grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=self._grace)


class MemoryBroker:
    """The broker interface over in-process queues; see the module documentation.

    ``grace`` is how long :meth:`MemoryConsumer.cancel` and :meth:`close` wait for running
    handlers before cancelling them.
    """

    def __init__(
        self,
        topology: Topology | None = None,
        *,
        grace: float = 30.0,
        dependencies: DependencyCheck | None = None,
    ) -> None:
        self.topology = topology or Topology()
        self._grace = grace
        self._queues: dict[str, _Queue] = {queue: _Queue() for queue in QUEUES}
        self._consumers: set[MemoryConsumer] = set()
        self._connected = False
        self._delayed: dict[int, tuple[asyncio.TimerHandle, _Envelope, str]] = {}
        self._gate = DependencyGate(dependencies, self.topology.retry_delay)

    async def connect(self) -> None:
        """Make the broker usable; queued messages from before a :meth:`close` are kept."""
        self._connected = True

    async def close(self) -> None:
        """Cancel every consumer (running handlers get the grace period) and refuse new work."""
        for consumer in list(self._consumers):
            await consumer.cancel()
        await self._gate.close()
        for handle, envelope, queue in list(self._delayed.values()):
            handle.cancel()
            self._queues[queue].put(envelope, front=True)
        self._delayed.clear()
        self._connected = False

    def _require_connected(self) -> None:
        if not self._connected:
            raise BrokerUnavailable("in-process broker is not connected")

    async def publish(self, queue: str, body: dict[str, Any], correlation_id: str) -> None:
        """Queue a copy of ``body``; BrokerUnavailable if the broker is not connected."""
        self.topology.queue_name(queue)
        payload = encode_body(body)
        self._require_connected()
        self._queues[queue].put(
            _Envelope(payload, correlation_id, uuid.uuid4().hex, origin=queue)
        )

    async def consume(self, queue: str, handler: Handler, prefetch: int = 4) -> MemoryConsumer:
        """Start handling the messages of ``queue``, at most ``prefetch`` concurrently."""
        self.topology.queue_name(queue)
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self._require_connected()
        consumer = MemoryConsumer(self, queue, handler, prefetch, self._grace)
        self._consumers.add(consumer)
        return consumer

    async def check(self) -> None:
        """Ready while connected; BrokerUnavailable otherwise."""
        self._require_connected()

    async def depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (not those being handled or waiting to be retried)."""
        self.topology.queue_name(queue)
        return len(self._queues[queue].ready)

    async def dead_letters(self, queue: str = DEAD_LETTER, *, drain: bool = False) -> list[Message]:
        """Dead-lettered messages, oldest first; only those from ``queue`` if it is a work queue.

        With ``drain`` they are removed from the dead-letter queue.
        """
        self.topology.queue_name(queue)
        dead = self._queues[DEAD_LETTER].ready
        chosen = [e for e in dead if queue in (DEAD_LETTER, e.origin)]
        if drain:
            taken = {id(e) for e in chosen}
            kept = [e for e in dead if id(e) not in taken]
            dead.clear()
            dead.extend(kept)
        return [e.message(e.origin) for e in chosen]

    async def redrive(self, queue: str = DEAD_LETTER) -> int:
        """Move dead letters (of every work queue, or only of ``queue``) back to the queue
        they died in, as new messages with a fresh delivery count; how many were moved."""
        self.topology.queue_name(queue)
        self._require_connected()
        dead = self._queues[DEAD_LETTER].ready
        chosen = [e for e in dead
                  if e.origin in WORK_QUEUES and queue in (DEAD_LETTER, e.origin)]
        taken = {id(e) for e in chosen}
        kept = [e for e in dead if id(e) not in taken]
        dead.clear()
        dead.extend(kept)
        for envelope in chosen:
            envelope.deliveries = 0
            self._queues[envelope.origin].put(envelope)
        return len(chosen)

    def _return(self, envelope: _Envelope, queue: str, reason: str) -> None:
        """Put a message back after an unsuccessful delivery (after the retry delay when
        its handler failed), or dead-letter it."""
        if queue != DEAD_LETTER and envelope.deliveries >= self.topology.max_deliveries:
            log.error(
                "message %s dead-lettered after %d deliveries on %s (%s)",
                envelope.message_id,
                envelope.deliveries,
                queue,
                reason,
            )
            self._queues[DEAD_LETTER].put(envelope)
        elif queue != DEAD_LETTER and reason == "handler failed":
            delay = self.topology.delay_after(envelope.deliveries)
            handle = asyncio.get_running_loop().call_later(delay, self._retry, envelope)
            self._delayed[id(envelope)] = (handle, envelope, queue)
        else:
            self._queues[queue].put(envelope, front=True)

    def _retry(self, envelope: _Envelope) -> None:
        entry = self._delayed.pop(id(envelope), None)
        if entry is not None:
            self._queues[entry[2]].put(envelope)
