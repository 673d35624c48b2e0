"""The consumers of :class:`shared.messaging.rabbit.RabbitBroker`: one queue's handler on a
channel of its own, and the settling of its deliveries.

A consumer acknowledges a message only after its handler returned; a failed handler's
message goes to the broker's retry path, or waits while the broker's dependency gate
reports an outage. Handlers still running when their channel is lost are cancelled (the
broker has already put their messages back in the queue), and a redelivery of a message
still being handled in this process waits for it and is only acknowledged if that one
succeeded. Acknowledging, returning or rejecting tolerates a lost channel: the broker
then delivers the message again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq
import pamqp.exceptions
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel

from shared.messaging.base import Handler

if TYPE_CHECKING:
    from shared.messaging.rabbit import RabbitBroker

# Records carry the broker module's logger name: one logger for everything RabbitMQ.
log = logging.getLogger("shared.messaging.rabbit")

# What the client raises when the connection or a channel is not usable.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    pamqp.exceptions.PAMQPException,
    ConnectionError,
    OSError,
)
_SETTLE_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    aio_pika.exceptions.MessageProcessError,
)


class RabbitConsumer:
    """A handler attached to one queue over a channel of its own."""

    def __init__(
        self,
        broker: RabbitBroker,
        queue: str,
        handler: Handler,
        channel: AbstractRobustChannel,
        amqp_queue: AbstractQueue,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._handler = handler
        self._channel = channel
        self._amqp_queue = amqp_queue
        self._tag = ""
        self._running: set[asyncio.Task[Any]] = set()
        self._cancelled = False

    async def _start(self) -> None:
        self._channel.close_callbacks.add(self._channel_lost)
        self._tag = await self._amqp_queue.consume(self._on_message, no_ack=False)

    def _channel_lost(self, _channel: object, _exc: BaseException | None) -> None:
        # The broker returns unacknowledged messages when a channel goes away; their
        # handlers' results could not be acknowledged any more.
        for task in list(self._running):
            task.cancel()

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        if self._cancelled:
            # Arrived while cancelling: closing the channel puts it back in the queue.
            return
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await self._process(incoming)
        finally:
            if task is not None:
                self._running.discard(task)

    async def _process(self, incoming: AbstractIncomingMessage) -> None:
        try:
            message = self._broker._decode(incoming, self._queue)
        except ValueError as exc:
            log.error(
                "message %s on %s is not a JSON object, dead-lettered: %s",
                incoming.message_id,
                self._queue,
                exc,
            )
            await settle(incoming.reject(requeue=False), "reject", incoming)
            return
        async with self._broker._exclusive(message.message_id) as execution:
            if execution.succeeded:
                log.info(
                    "message %s on %s already handled by an earlier delivery",
                    message.message_id,
                    self._queue,
                )
                await settle(incoming.ack(), "acknowledge", incoming)
                return
            gate = self._broker._gate
            while True:
                await gate.wait_open()
                try:
                    await self._handler(message)
                    break
                except Exception as exc:
                    outage = await gate.outage()
                    # Only the exception's type: its text could quote identifying data.
                    log.warning(
                        "handler for %s failed on delivery %d of %d of message %s: %s%s",
                        self._queue,
                        message.delivery_count,
                        self._broker.topology.max_deliveries,
                        message.message_id,
                        type(exc).__name__,
                        " during an outage (not counted; it waits)" if outage else "",
                    )
                    log.debug("handler failure", exc_info=True)
                    if not outage:
                        await self._broker._retry_later(incoming, message)
                        return
            execution.succeeded = True
            await settle(incoming.ack(), "acknowledge", incoming)

    async def cancel(self) -> None:
        """Stop receiving, give running handlers the broker's grace period, close the channel.

        Handlers still running after the grace period are cancelled; their messages go back
        to the queue when the channel closes.
        """
        if self._cancelled:
            return
        self._cancelled = True
        self._broker._consumers.discard(self)
        with contextlib.suppress(*CONNECTION_ERRORS, TimeoutError):
            async with asyncio.timeout(self._broker.operation_timeout):
                await self._amqp_queue.cancel(self._tag)
        others = self._running - {asyncio.current_task()}
        if others:
            _, pending = await asyncio.wait(others, timeout=self._broker.grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=self._broker.operation_timeout)
        with contextlib.suppress(*CONNECTION_ERRORS, TimeoutError):
            async with asyncio.timeout(self._broker.operation_timeout):
                await self._channel.close()


async def settle(action: Awaitable[None], what: str, incoming: AbstractIncomingMessage) -> None:
    """Acknowledge, return or reject; a lost channel means the broker redelivers anyway."""
    try:
        await action
    except _SETTLE_ERRORS as exc:
        log.warning(
            "could not %s message %s (%s); the broker will deliver it again",
            what,
            incoming.message_id,
            type(exc).__name__,
        )

