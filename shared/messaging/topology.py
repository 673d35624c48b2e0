"""The queues the services talk over, and how they map onto RabbitMQ.

Four work queues (``anonymize``, ``relink``, ``retrieve``, ``export``) and one dead-letter queue. On
RabbitMQ the work queues are durable quorum queues with a delivery limit whose messages,
once the limit is exceeded, go through the direct exchange ``dlx`` to the dead-letter
queue. A failed delivery is retried after a delay that grows with every failure
(:meth:`Topology.delay_after`): the message waits in a retry queue of that delay
(``<queue>.retry.<ms>ms``, a quorum queue whose message TTL is the delay and whose
expired messages go back to the work queue through the default exchange).
A prefix in front of every name lets several independent topologies share a
broker (each test uses its own). ``infra/rabbitmq/definitions.json`` holds
:meth:`Topology.definitions` for the empty prefix; a unit test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ANONYMIZE = "anonymize"
RELINK = "relink"
RETRIEVE = "retrieve"
EXPORT = "export"
DEAD_LETTER = "dead-letter"

WORK_QUEUES: tuple[str, ...] = (ANONYMIZE, RELINK, RETRIEVE, EXPORT)
QUEUES: tuple[str, ...] = (*WORK_QUEUES, DEAD_LETTER)

DEAD_LETTER_EXCHANGE = "dlx"
VHOST = "/"
_RETRY_INFIX = ".retry."


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


@dataclass(frozen=True)
class QueueSpec:
    """One queue as declared on RabbitMQ: logical and real name, durability, arguments."""

    logical: str
    name: str
    durable: bool
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Topology:
    """Names and arguments of every queue and exchange, for one prefix.

    ``max_deliveries`` is how many times a message is handed to a handler before it is
    dead-lettered (1 means: never redelivered after a failure). RabbitMQ's
    ``x-delivery-limit`` counts redeliveries, so it is declared as ``max_deliveries - 1``.
    The dead-letter queue is a durable classic queue: it has no delivery limit, so it
    can be inspected as often as needed without losing anything.
    """

    prefix: str = ""
    max_deliveries: int = 5
    retry_delay: float = 5.0
    retry_max_delay: float = 300.0

    def __post_init__(self) -> None:
        if self.max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        if not 0.001 <= self.retry_delay <= self.retry_max_delay:
            raise ValueError("retry_delay must be at least 0.001 s and at most retry_max_delay")
        if any(c.isspace() for c in self.prefix):
            raise ValueError("the queue prefix must not contain whitespace")

    def queue_name(self, queue: str) -> str:
        """The real name of a logical queue; ValueError for a name not in :data:`QUEUES`."""
        if queue not in QUEUES:
            raise ValueError(f"unknown queue {queue!r}; expected one of {', '.join(QUEUES)}")
        return f"{self.prefix}{queue}"

    def logical_name(self, name: str) -> str | None:
        """The logical name of a real queue name of this topology, or None if it is not one.

        A retry queue's name gives the work queue it feeds."""
        for queue in QUEUES:
            if self.queue_name(queue) == name:
                return queue
        for queue in WORK_QUEUES:
            if name.startswith(self.queue_name(queue) + _RETRY_INFIX) and name.endswith("ms"):
                return queue
        return None

    def delay_after(self, failures: int) -> float:
        """Seconds a message waits after its ``failures``-th failed delivery: the base delay,
        doubled after every further failure, at most ``retry_max_delay``."""
        if failures < 1:
            raise ValueError("failures must be at least 1")
        return float(min(self.retry_delay * 2 ** min(failures - 1, 60), self.retry_max_delay))

    def retry_delays(self) -> tuple[float, ...]:
        """The distinct delays a message can wait before its deliveries 2 to max_deliveries."""
        delays = {self.delay_after(n) for n in range(1, self.max_deliveries)}
        return tuple(sorted(delays))

    def retry_queue_name(self, queue: str, failures: int) -> str:
        """The retry queue a message of work queue ``queue`` waits in after a failure."""
        if queue not in WORK_QUEUES:
            raise ValueError(f"{queue!r} is not a work queue")
        return self._retry_name(queue, self.delay_after(failures))

    def _retry_name(self, queue: str, delay: float) -> str:
        return f"{self.queue_name(queue)}{_RETRY_INFIX}{_milliseconds(delay)}ms"

    def retry_queues(self) -> tuple[QueueSpec, ...]:
        """Every retry queue, durable; its ``logical`` name is the work queue it feeds."""
        return tuple(
            QueueSpec(queue, self._retry_name(queue, delay), True, {
                "x-queue-type": "quorum",
                "x-message-ttl": _milliseconds(delay),
                "x-overflow": "reject-publish",
                "x-dead-letter-strategy": "at-least-once",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.queue_name(queue),
            })
            for queue in WORK_QUEUES
            for delay in self.retry_delays()
        )

    @property
    def dead_letter_exchange(self) -> str:
        """Real name of the durable direct exchange that feeds the dead-letter queue."""
        return f"{self.prefix}{DEAD_LETTER_EXCHANGE}"

    @property
    def dead_letter_routing_key(self) -> str:
        """Routing key of dead-lettered messages, which the dead-letter queue is bound with."""
        return self.queue_name(DEAD_LETTER)

    def queue_arguments(self, queue: str) -> dict[str, Any]:
        """The ``x-`` arguments a logical queue is declared with."""
        if queue == DEAD_LETTER:
            return {"x-queue-type": "classic"}
        self.queue_name(queue)
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.max_deliveries - 1,
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-dead-letter-routing-key": self.dead_letter_routing_key,
        }

    def queues(self) -> tuple[QueueSpec, ...]:
        """The work queues and the dead-letter queue, all durable (retry queues:
        :meth:`retry_queues`)."""
        return tuple(
            QueueSpec(queue, self.queue_name(queue), True, self.queue_arguments(queue))
            for queue in QUEUES
        )

    def definitions(self) -> dict[str, Any]:
        """The topology as a RabbitMQ definitions document (vhost ``/``), as loaded at boot."""
        return {
            "vhosts": [{"name": VHOST}],
            "exchanges": [
                {
                    "name": self.dead_letter_exchange,
                    "vhost": VHOST,
                    "type": "direct",
                    "durable": True,
                    "auto_delete": False,
                    "internal": False,
                    "arguments": {},
                }
            ],
            "queues": [
                {
                    "name": spec.name,
                    "vhost": VHOST,
                    "durable": spec.durable,
                    "auto_delete": False,
                    "arguments": spec.arguments,
                }
                for spec in self.queues() + self.retry_queues()
            ],
            "bindings": [
                {
                    "source": self.dead_letter_exchange,
                    "vhost": VHOST,
                    "destination": self.queue_name(DEAD_LETTER),
                    "destination_type": "queue",
                    "routing_key": self.dead_letter_routing_key,
                    "arguments": {},
                }
            ],
        }
