"""Messaging between the services: a broker interface, RabbitMQ and in-process brokers.

Messages carry object keys and metadata as JSON, never DICOM bytes. See
:mod:`shared.messaging.base` for the delivery contract and
:mod:`shared.messaging.topology` for the queues.

The RabbitMQ classes are imported on first use: aio-pika is slow to import, and commands
that only need the queue names should not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.messaging.base import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    Consumer,
    Handler,
    Message,
)
from shared.messaging.memory import MemoryBroker, MemoryConsumer
from shared.messaging.topology import (
    ANONYMIZE,
    DEAD_LETTER,
    EXPORT,
    QUEUES,
    RELINK,
    RETRIEVE,
    WORK_QUEUES,
    QueueSpec,
    Topology,
)

__all__ = [
    "ANONYMIZE",
    "DEAD_LETTER",
    "EXPORT",
    "QUEUES",
    "RELINK",
    "RETRIEVE",
    "WORK_QUEUES",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "Consumer",
    "Handler",
    "MemoryBroker",
    "MemoryConsumer",
    "Message",
    "QueueSpec",
    "RabbitBroker",
    "RabbitConsumer",
    "Topology",
]

if TYPE_CHECKING:
    from shared.messaging.rabbit import RabbitBroker
    from shared.messaging.rabbit_consumer import RabbitConsumer


def __getattr__(name: str) -> Any:
    if name == "RabbitBroker":
        from shared.messaging.rabbit import RabbitBroker

        return RabbitBroker
    if name == "RabbitConsumer":
        from shared.messaging.rabbit_consumer import RabbitConsumer

        return RabbitConsumer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
