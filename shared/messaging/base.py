"""The broker interface shared by the RabbitMQ and the in-process implementation.

Messages carry object keys and metadata as JSON, never DICOM bytes. Delivery is at least
once: a handler that returns normally has its message acknowledged (so it must make its
effects durable before returning); a handler that raises has its message returned to the
queue and delivered again after a delay that grows with each failure, until
``max_deliveries`` deliveries have failed and the message goes to the dead-letter queue
(from where :meth:`Broker.redrive` moves it back). A broker given a dependency check
does not count failures while that check fails, and pauses its consumers until it passes.
A handler is also interrupted (cancelled) when the
connection its message came over is lost; the message is then delivered again. Handlers
must therefore be idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shared.messaging.topology import DEAD_LETTER


class BrokerError(Exception):
    """A messaging operation failed."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached or did not confirm in time; the message names host:port only."""


@dataclass(frozen=True)
class Message:
    """One delivery of a message to a handler.

    ``body`` is the JSON object that was published. ``delivery_count`` is 1 on the first
    delivery and grows by one each time the message is handed out again. ``queue`` is
    the logical queue it was consumed from; for messages read from the dead-letter queue
    it is the queue the message died in, and ``delivery_count`` the number of deliveries
    it had there. ``message_id`` is assigned at publication and stays the same across
    redeliveries (a key for idempotence).
    """

    body: dict[str, Any]
    correlation_id: str
    delivery_count: int
    queue: str
    message_id: str = ""


Handler = Callable[[Message], Awaitable[None]]


class Consumer(Protocol):
    """A running subscription of a handler to a queue."""

    async def cancel(self) -> None:
        """Stop receiving, let running handlers finish (within a grace period), then detach."""
        ...


class Broker(Protocol):
    """What the services need from a message broker."""

    async def connect(self) -> None:
        """Connect and declare the topology; BrokerUnavailable if the broker cannot be reached."""
        ...

    async def close(self) -> None:
        """Cancel every consumer and disconnect."""
        ...

    async def publish(self, queue: str, body: dict[str, Any], correlation_id: str) -> None:
        """Publish a persistent message; return only once the broker has confirmed it.

        Raises BrokerUnavailable when the message cannot be published or its confirmation
        does not arrive in time; the message may then still have been queued, so a retry
        may produce a duplicate (which handlers tolerate).
        """
        ...

    async def consume(self, queue: str, handler: Handler, prefetch: int = 4) -> Consumer:
        """Run ``handler`` on the messages of ``queue``, at most ``prefetch`` at a time."""
        ...

    async def check(self) -> None:
        """Readiness: return if the broker answers, else raise BrokerUnavailable."""
        ...

    async def depth(self, queue: str) -> int:
        """The number of messages ready (not being handled) in a queue."""
        ...

    async def dead_letters(self, queue: str = DEAD_LETTER, *, drain: bool = False) -> list[Message]:
        """The messages in the dead-letter queue, oldest first; removed from it if ``drain``."""
        ...

    async def redrive(self, queue: str = DEAD_LETTER) -> int:
        """Move the dead letters of every work queue (or of ``queue``) back to the queue they
        died in, with a fresh delivery count; the number moved."""
        ...


def encode_body(body: dict[str, Any]) -> bytes:
    """A message body as compact UTF-8 JSON; TypeError or ValueError if it is not JSON."""
    if not isinstance(body, dict):
        raise TypeError(f"a message body must be a dict, not {type(body).__name__}")
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def decode_body(data: bytes) -> dict[str, Any]:
    """The JSON object of a message body; ValueError if it is not one."""
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"message body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"message body is JSON {type(value).__name__}, not an object")
    return value
