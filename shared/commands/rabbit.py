"""Commands over RabbitMQ: request/reply between the CLI (or the API) and a service.

Each service consumes its command queue ``<prefix>commands.<service>``; replicas share it.
A caller publishes the request to it with ``reply_to`` naming an exclusive queue of its
own and a correlation id, and waits for the answer there. Requests and answers are
transient (never written to disk: a query's answer holds PHI) and expire after the
caller's timeout, so a request nobody took in time is dropped, not answered late. The
command queue is a classic, non-durable queue: it holds nothing worth keeping across a
broker restart. Long work is not done here: a command creates a job in the index and
answers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from shared.commands.protocol import Registry, ServiceUnavailable, failure
from shared.observability.logging import log_fields

log = logging.getLogger(__name__)


def command_queue(prefix: str, service: str) -> str:
    return f"{prefix}commands.{service}"


def _where(url: str) -> str:
    """host:port of an AMQP URL (no credentials)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5672}"


class RabbitCommandServer:
    """Answers the commands of one service from its command queue."""

    def __init__(self, url: str, prefix: str, registry: Registry, concurrency: int = 4) -> None:
        self.url = url
        self.queue = command_queue(prefix, registry.service)
        self.registry = registry
        self.concurrency = concurrency
        self._connection: AbstractRobustConnection | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self.url, client_properties={"connection_name": f"{self.registry.service} commands"})
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self.concurrency)
        queue = await channel.declare_queue(self.queue, durable=False)
        await queue.consume(self._on_request)
        log.info("answering commands", extra=log_fields(queue=self.queue))

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        async with message.process(ignore_processed=True):
            try:
                body: object = json.loads(message.body)
            except ValueError:
                answer = failure("BadRequest", "a command is a JSON object")
            else:
                answer = await self.registry.answer(body)
            if not message.reply_to:
                return
            channel = message.channel
            with contextlib.suppress(Exception):  # the caller may be gone
                await channel.basic_publish(
                    json.dumps(answer, ensure_ascii=False).encode(),
                    routing_key=message.reply_to,
                    properties=aio_pika.Message(
                        b"", correlation_id=message.correlation_id,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                    ).properties,
                )

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


class RabbitCommandClient:
    """Sends commands to the services over RabbitMQ and waits for their answers."""

    def __init__(self, url: str, prefix: str, timeout: float) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout

    async def call(self, service: str, body: dict[str, Any]) -> dict[str, Any]:
        """The answer of ``service`` to one request; :class:`ServiceUnavailable` when the
        broker cannot be reached, no such service is running, or none answers in time."""
        try:
            connection = await aio_pika.connect(self.url, timeout=min(self.timeout, 15))
        except Exception as exc:
            raise ServiceUnavailable(
                f"RabbitMQ at {_where(self.url)} cannot be reached ({type(exc).__name__})"
            ) from None
        try:
            async with connection:
                channel = await connection.channel()
                try:
                    target = await channel.declare_queue(
                        command_queue(self.prefix, service), passive=True)
                except aio_pika.exceptions.ChannelClosed:
                    raise ServiceUnavailable(
                        f"no {service} is running (its command queue does not exist on this "
                        f"broker): start the {service} service"
                    ) from None
                consumers = target.declaration_result.consumer_count
                if not consumers:
                    raise ServiceUnavailable(
                        f"no {service} is running (nothing consumes its command queue): "
                        f"start the {service} service")
                replies = await channel.declare_queue(exclusive=True, auto_delete=True)
                correlation = uuid.uuid4().hex
                answered: asyncio.Future[dict[str, Any]] = (
                    asyncio.get_running_loop().create_future())

                async def on_reply(message: AbstractIncomingMessage) -> None:
                    if message.correlation_id == correlation and not answered.done():
                        try:
                            answered.set_result(json.loads(message.body))
                        except ValueError:
                            answered.set_result(failure("BadAnswer", "unreadable answer"))

                await replies.consume(on_reply, no_ack=True)
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        json.dumps(body, ensure_ascii=False).encode(),
                        content_type="application/json", correlation_id=correlation,
                        reply_to=replies.name,
                        delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                        expiration=self.timeout,
                    ),
                    routing_key=target.name,
                )
                try:
                    return await asyncio.wait_for(answered, self.timeout)
                except TimeoutError:
                    raise ServiceUnavailable(
                        f"{service} did not answer within {self.timeout:g} s "
                        "(COMMAND_TIMEOUT_SECONDS)") from None
        except ServiceUnavailable:
            raise
        except aio_pika.exceptions.AMQPError as exc:
            raise ServiceUnavailable(
                f"RabbitMQ at {_where(self.url)} failed ({type(exc).__name__})") from None
