"""Messaging between the services: a broker interface, RabbitMQ and in-process brokers.

Messages carry object keys and metadata as JSON, never DICOM bytes. See
:mod:`shared.messaging.base` for the delivery contract and
:mod:`shared.messaging.topology` for the queues.
"""

from shared.messaging.base import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    Consumer,
    Handler,
    Message,
)
from shared.messaging.memory import MemoryBroker, MemoryConsumer
from shared.messaging.rabbit import RabbitBroker, RabbitConsumer
from shared.messaging.topology import (
    ANONYMIZE,
    DEAD_LETTER,
    EXPORT,
    QUEUES,
    RELINK,
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
