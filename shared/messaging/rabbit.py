"""The broker interface on RabbitMQ (aio-pika), with automatic reconnection.

One robust connection per broker object: when RabbitMQ restarts or the connection drops,
aio-pika reconnects by itself, declares the topology again and resumes every consumer.
Publishing uses a channel with publisher confirms; every consumer has a channel of its
own with ``prefetch`` as its QoS. Messages are persistent JSON with content type, message
id and correlation id; they are acknowledged only after their handler returned.

While the connection is down, :meth:`RabbitBroker.publish` waits for it to come back
within its timeout and otherwise raises :class:`BrokerUnavailable`; it never returns
without the broker's confirmation. Handlers running when their connection is lost are
cancelled, because the broker has already put their messages back in the queue. A
redelivery that arrives while an earlier delivery of the same message is still being
handled in this process waits for it, and is only acknowledged if that one succeeded.
The consumers are in :mod:`shared.messaging.rabbit_consumer`.

A message whose handler fails is published again (confirmed) to the retry queue of its
delay and then acknowledged; the retry queue hands it back to the work queue when the
delay has passed (:mod:`shared.messaging.topology`). The header ``x-deliveries`` carries
the deliveries it had before; once ``max_deliveries`` have failed it is rejected, and
RabbitMQ dead-letters it. With a ``dependencies`` check, failures during an outage are
not counted (:mod:`shared.messaging.retry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from shared.messaging.base import (
    BrokerError,
    BrokerUnavailable,
    Handler,
    Message,
    decode_body,
    encode_body,
)
from shared.messaging.rabbit_consumer import CONNECTION_ERRORS, RabbitConsumer, settle
from shared.messaging.retry import DependencyCheck, DependencyGate
from shared.messaging.topology import DEAD_LETTER, WORK_QUEUES, Topology

log = logging.getLogger(__name__)

T = TypeVar("T")

# What connecting raises when RabbitMQ cannot be reached.
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, RuntimeError)
# Deliveries a message had before it was published again for a retry.
DELIVERIES_HEADER = "x-deliveries"


@dataclass
class _Execution:
    """Deliveries of one message id being handled in this process."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    succeeded: bool = False


async def _close_quietly(channel: AbstractRobustChannel) -> None:
    if channel.is_initialized and not channel.is_closed:
        with contextlib.suppress(Exception):
            await channel.close()


class RabbitBroker:
    """The broker interface on RabbitMQ; see the module documentation.

    ``url`` is an AMQP URL (``amqp://user:password@host:5672/vhost``); only host and port
    ever appear in errors and logs. ``operation_timeout`` bounds every broker round trip,
    in particular the wait for a publisher confirm; ``reconnect_interval`` is the pause
    between reconnection attempts; ``grace`` is how long cancelling a consumer waits for
    its running handlers. ``connection_name`` is shown by RabbitMQ for the connection.
    ``dependencies`` is the check that pauses consumers during an outage.
    """

    def __init__(
        self,
        url: str,
        topology: Topology | None = None,
        *,
        operation_timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        grace: float = 30.0,
        connection_name: str | None = None,
        dependencies: DependencyCheck | None = None,
    ) -> None:
        parts = urlsplit(url)
        default_port = 5671 if parts.scheme == "amqps" else 5672
        self.where = f"{parts.hostname or 'localhost'}:{parts.port or default_port}"
        self.topology = topology or Topology()
        self.operation_timeout = operation_timeout
        self.grace = grace
        self.connection_name = connection_name or (
            f"dicom-deid {socket.gethostname()} pid {os.getpid()} {self.topology.prefix}".strip()
        )
        self._url = url
        self._password = parts.password or ""
        self._reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queues: dict[str, AbstractQueue] = {}
        self._consumers: set[RabbitConsumer] = set()
        self._executions: dict[str, _Execution] = {}
        self._reconnects = 0
        self._gate = DependencyGate(dependencies, self.topology.retry_delay)

    @property
    def reconnects(self) -> int:
        """How many times the connection was re-established after being lost."""
        return self._reconnects

    def _unavailable(self, what: str, exc: BaseException | None = None) -> BrokerUnavailable:
        text = f"RabbitMQ at {self.where}: {what}"
        if exc is not None:
            detail = str(exc)
            for secret in {self._password, unquote(self._password)} - {""}:
                detail = detail.replace(secret, "***")
            text += f" ({type(exc).__name__}{': ' + detail if detail else ''})"
        return BrokerUnavailable(text)

    async def _bounded(self, what: str, operation: Awaitable[T]) -> T:
        """Run one broker operation within the operation timeout, mapping failures."""
        try:
            async with asyncio.timeout(self.operation_timeout):
                return await operation
        except TimeoutError as exc:
            raise self._unavailable(
                f"{what}: no answer within {self.operation_timeout:g} s", exc
            ) from exc
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise BrokerError(f"RabbitMQ at {self.where}: {what}: {exc}") from exc
        except CONNECTION_ERRORS as exc:
            raise self._unavailable(what, exc) from exc
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # A future of the lost connection was cancelled, not this task.
            raise self._unavailable(f"{what}: connection lost", exc) from exc

    def _require_connection(self) -> tuple[AbstractRobustConnection, AbstractRobustChannel]:
        if self._connection is None or self._channel is None or self._connection.is_closed:
            raise self._unavailable("not connected")
        return self._connection, self._channel

    def _declared(self, queue: str) -> AbstractQueue:
        try:
            return self._queues[queue]
        except KeyError:
            raise BrokerError(f"queue {queue!r} is not declared (topology deleted?)") from None

    async def connect(self) -> None:
        """Connect (reconnecting by itself from then on) and declare the topology.

        BrokerUnavailable if RabbitMQ cannot be reached; BrokerError if a queue exists
        with different arguments.
        """
        if self._connection is not None and not self._connection.is_closed:
            return
        try:
            connection = await aio_pika.connect_robust(
                self._url,
                timeout=self.operation_timeout,
                reconnect_interval=self._reconnect_interval,
                client_properties={"connection_name": self.connection_name},
            )
        except _CONNECT_ERRORS as exc:
            raise self._unavailable("cannot connect", exc) from exc
        connection.reconnect_callbacks.add(self._reconnected)
        try:
            channel = await self._bounded(
                "open channel", connection.channel(publisher_confirms=True, on_return_raises=True)
            )
            self._queues = await self._bounded("declare topology", self._declare(channel))
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        self._connection, self._channel = connection, channel
        log.info("connected to RabbitMQ at %s", self.where)

    def _reconnected(self, _connection: object) -> None:
        self._reconnects += 1
        log.warning("reconnected to RabbitMQ at %s", self.where)

    async def _declare(self, channel: AbstractRobustChannel) -> dict[str, AbstractQueue]:
        topology = self.topology
        exchange = await channel.declare_exchange(
            topology.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        queues: dict[str, AbstractQueue] = {}
        for spec in topology.queues():
            queues[spec.logical] = await channel.declare_queue(
                spec.name, durable=spec.durable, arguments=spec.arguments
            )
        await queues[DEAD_LETTER].bind(exchange, routing_key=topology.dead_letter_routing_key)
        for spec in topology.retry_queues():
            await channel.declare_queue(spec.name, durable=spec.durable, arguments=spec.arguments)
        return queues

    async def close(self) -> None:
        """Cancel every consumer (running handlers get the grace period), then disconnect."""
        for consumer in list(self._consumers):
            await consumer.cancel()
        await self._gate.close()
        connection, self._connection, self._channel = self._connection, None, None
        self._queues = {}
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def publish(self, queue: str, body: dict[str, Any], correlation_id: str) -> None:
        """Publish a persistent JSON message and wait for the broker's confirmation.

        If the connection is being re-established, waits for it within the operation
        timeout. Raises BrokerUnavailable when not confirmed (the message may or may not
        have been queued), ValueError for an unknown queue, TypeError or ValueError for a
        body that is not JSON.
        """
        routing_key = self.topology.queue_name(queue)
        payload = encode_body(body)
        await self._publish_confirmed(routing_key, payload, correlation_id, uuid.uuid4().hex)

    async def _publish_confirmed(
        self,
        routing_key: str,
        payload: bytes,
        correlation_id: str,
        message_id: str,
        headers: dict[str, Any] | None = None,
    ) -> None:
        message = aio_pika.Message(
            payload,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=correlation_id,
            message_id=message_id,
            timestamp=datetime.now(UTC),
            headers=headers,
        )
        _, channel = self._require_connection()

        async def confirmed() -> None:
            await channel.ready()
            await channel.default_exchange.publish(message, routing_key=routing_key, mandatory=True)

        await self._bounded(f"publish to {routing_key}", confirmed())

    async def _retry_later(self, incoming: AbstractIncomingMessage, message: Message) -> None:
        """After a counted failure: dead-letter the message if it had its deliveries, else
        publish it to the retry queue of its delay and acknowledge this delivery."""
        if message.queue not in WORK_QUEUES:  # the dead-letter queue: no retry queues
            await settle(incoming.nack(requeue=True), "return", incoming)
            return
        if message.delivery_count >= self.topology.max_deliveries:
            log.error(
                "message %s dead-lettered after %d deliveries on %s",
                message.message_id, message.delivery_count, message.queue,
            )
            await settle(incoming.reject(requeue=False), "reject", incoming)
            return
        retry_queue = self.topology.retry_queue_name(message.queue, message.delivery_count)
        try:
            await self._publish_confirmed(
                retry_queue, incoming.body, message.correlation_id,
                message.message_id or uuid.uuid4().hex,
                {DELIVERIES_HEADER: message.delivery_count},
            )
        except BrokerError as exc:
            log.warning("message %s not delayed (%s); returned at once",
                        message.message_id, type(exc).__name__)
            await settle(incoming.nack(requeue=True), "return", incoming)
            return
        await settle(incoming.ack(), "acknowledge", incoming)

    async def consume(self, queue: str, handler: Handler, prefetch: int = 4) -> RabbitConsumer:
        """Start handling the messages of ``queue`` on a new channel with QoS ``prefetch``."""
        name = self.topology.queue_name(queue)
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        connection, _ = self._require_connection()
        channel = connection.channel(publisher_confirms=False)

        async def start() -> RabbitConsumer:
            await channel
            await channel.set_qos(prefetch_count=prefetch)
            amqp_queue = await channel.declare_queue(
                name, durable=True, arguments=self.topology.queue_arguments(queue)
            )
            consumer = RabbitConsumer(self, queue, handler, channel, amqp_queue)
            await consumer._start()
            return consumer

        try:
            consumer = await self._bounded(f"consume from {name}", start())
        except BaseException:
            await _close_quietly(channel)
            raise
        self._consumers.add(consumer)
        return consumer

    async def check(self) -> None:
        """Readiness: the connection is up and RabbitMQ answers a declaration in time."""
        _, channel = self._require_connection()
        dead = self._declared(DEAD_LETTER)

        async def probe() -> None:
            await channel.ready()
            await dead.declare()

        await self._bounded("readiness check", probe())

    async def depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (those being handled are not counted)."""
        self.topology.queue_name(queue)
        _, channel = self._require_connection()
        amqp_queue = self._declared(queue)

        async def count() -> int:
            await channel.ready()
            result = await amqp_queue.declare()
            return result.message_count or 0

        return await self._bounded(f"depth of {amqp_queue.name}", count())

    async def dead_letters(self, queue: str = DEAD_LETTER, *, drain: bool = False) -> list[Message]:
        """Dead-lettered messages, oldest first; only those from ``queue`` if it is a work queue.

        Reads the dead-letter queue on a channel of its own and, unless ``drain``, lets the
        broker put every message back in place by closing that channel.
        """
        self.topology.queue_name(queue)
        connection, _ = self._require_connection()
        name = self.topology.queue_name(DEAD_LETTER)
        channel = connection.channel(publisher_confirms=False)

        async def read() -> list[Message]:
            await channel
            amqp_queue = await channel.get_queue(name, ensure=False)
            found: list[Message] = []
            while (incoming := await amqp_queue.get(no_ack=False, fail=False)) is not None:
                message = self._dead_letter(incoming)
                if queue in (DEAD_LETTER, message.queue):
                    found.append(message)
                    if drain:
                        await incoming.ack()
            return found

        try:
            return await self._bounded(f"read {name}", read())
        finally:
            await _close_quietly(channel)

    async def redrive(self, queue: str = DEAD_LETTER) -> int:
        """Move dead letters (of every work queue, or only of ``queue``) back to the queue
        they died in, as new messages with a fresh delivery count; how many were moved.

        Each is published (confirmed) before it is removed from the dead-letter queue, so
        a failure half-way leaves a duplicate at worst, never a loss. Dead letters of
        unknown origin stay where they are.
        """
        self.topology.queue_name(queue)
        connection, _ = self._require_connection()
        name = self.topology.queue_name(DEAD_LETTER)
        channel = connection.channel(publisher_confirms=False)

        async def move() -> int:
            await channel
            amqp_queue = await channel.get_queue(name, ensure=False)
            moved = 0
            while (incoming := await amqp_queue.get(no_ack=False, fail=False)) is not None:
                message = self._dead_letter(incoming)
                if message.queue not in WORK_QUEUES or queue not in (DEAD_LETTER, message.queue):
                    continue
                await self._publish_confirmed(
                    self.topology.queue_name(message.queue), incoming.body,
                    message.correlation_id, message.message_id or uuid.uuid4().hex,
                )
                await incoming.ack()
                moved += 1
            return moved

        try:
            return await self._bounded(f"redrive {name}", move())
        finally:
            await _close_quietly(channel)

    async def delete_topology(self) -> None:
        """Cancel the consumers and delete every queue and the exchange (for tests)."""
        for consumer in list(self._consumers):
            await consumer.cancel()
        _, channel = self._require_connection()

        async def delete() -> None:
            for spec in self.topology.queues() + self.topology.retry_queues():
                await channel.queue_delete(spec.name)
            await channel.exchange_delete(self.topology.dead_letter_exchange)

        await self._bounded("delete topology", delete())
        self._queues = {}

    @contextlib.asynccontextmanager
    async def _exclusive(self, message_id: str) -> AsyncIterator[_Execution]:
        """Serialise the deliveries of one message id within this process."""
        if not message_id:
            yield _Execution()
            return
        execution = self._executions.setdefault(message_id, _Execution())
        execution.users += 1
        try:
            async with execution.lock:
                yield execution
        finally:
            execution.users -= 1
            if execution.users == 0:
                del self._executions[message_id]

    def _decode(self, incoming: AbstractIncomingMessage, queue: str) -> Message:
        headers = incoming.headers or {}
        count = headers.get("x-delivery-count")
        before = headers.get(DELIVERIES_HEADER)
        returned = count if isinstance(count, int) else (1 if incoming.redelivered else 0)
        deliveries = (before if isinstance(before, int) else 0) + returned + 1
        return Message(
            body=decode_body(incoming.body),
            correlation_id=incoming.correlation_id or "",
            delivery_count=deliveries,
            queue=queue,
            message_id=incoming.message_id or "",
        )

    def _dead_letter(self, incoming: AbstractIncomingMessage) -> Message:
        headers = incoming.headers or {}
        # The latest death that was not a retry delay expiring is where it died.
        origin, reason = headers.get("x-first-death-queue"), headers.get("x-first-death-reason")
        deaths = headers.get("x-death")
        for death in deaths if isinstance(deaths, list) else []:
            if isinstance(death, dict) and death.get("reason") != "expired":
                origin, reason = death.get("queue"), death.get("reason")
                break
        logical = self.topology.logical_name(origin) if isinstance(origin, str) else None
        try:
            body = decode_body(incoming.body)
        except ValueError:
            body = {"undecodable": incoming.body.decode("utf-8", "replace")}
        before = headers.get(DELIVERIES_HEADER)
        before = before if isinstance(before, int) else 0
        count = headers.get("x-delivery-count")
        if reason == "delivery_limit":
            deliveries = before + self.topology.max_deliveries
        else:
            deliveries = before + (count if isinstance(count, int) else 0) + 1
        return Message(
            body=body,
            correlation_id=incoming.correlation_id or "",
            delivery_count=deliveries,
            queue=logical or DEAD_LETTER,
            message_id=incoming.message_id or "",
        )
