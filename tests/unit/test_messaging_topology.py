"""The queue topology, and the RabbitMQ definitions file that must stay equal to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.messaging.topology import (
    ANONYMIZE,
    DEAD_LETTER,
    EXPORT,
    QUEUES,
    RELINK,
    Topology,
)

INFRA = Path(__file__).resolve().parents[2] / "infra" / "rabbitmq"


def _definitions() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((INFRA / "definitions.json").read_text())
    return document


def test_definitions_file_is_the_default_topology() -> None:
    assert _definitions() == Topology().definitions()


def test_definitions_file_declares_every_queue_with_its_arguments() -> None:
    document = _definitions()
    topology = Topology()
    assert document["vhosts"] == [{"name": "/"}]
    queues = {queue["name"]: queue for queue in document["queues"]}
    retries = {f"{q}.retry.{ms}ms" for q in ("anonymize", "relink", "retrieve", "export")
               for ms in (5000, 10000, 20000, 40000)}
    assert set(queues) == {"anonymize", "relink", "retrieve", "export", "dead-letter"} | retries
    for spec in topology.retry_queues():
        assert queues[spec.name]["arguments"] == spec.arguments
        assert spec.arguments["x-dead-letter-routing-key"] == spec.logical
    for spec in topology.queues():
        queue = queues[spec.name]
        assert (queue["vhost"], queue["durable"], queue["auto_delete"]) == ("/", True, False)
        assert queue["arguments"] == spec.arguments == topology.queue_arguments(spec.logical)
    for name in ("anonymize", "relink", "export"):
        assert queues[name]["arguments"] == {
            "x-queue-type": "quorum",
            "x-delivery-limit": topology.max_deliveries - 1,
            "x-dead-letter-exchange": "dlx",
            "x-dead-letter-routing-key": "dead-letter",
        }
    assert queues["dead-letter"]["arguments"] == {"x-queue-type": "classic"}
    [exchange] = document["exchanges"]
    assert (exchange["name"], exchange["type"], exchange["durable"]) == ("dlx", "direct", True)
    [binding] = document["bindings"]
    assert (binding["source"], binding["destination"], binding["routing_key"]) == (
        "dlx",
        "dead-letter",
        "dead-letter",
    )
    assert binding["destination_type"] == "queue"


def test_rabbitmq_conf_loads_the_definitions_file() -> None:
    lines = (INFRA / "rabbitmq.conf").read_text().splitlines()
    settings = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert "load_definitions = /etc/rabbitmq/definitions.json" in settings


def test_prefix_applies_to_every_name() -> None:
    topology = Topology(prefix="t1-", max_deliveries=2)
    assert [topology.queue_name(queue) for queue in QUEUES] == [
        "t1-anonymize",
        "t1-relink",
        "t1-retrieve",
        "t1-export",
        "t1-dead-letter",
    ]
    assert topology.dead_letter_exchange == "t1-dlx"
    assert topology.queue_arguments(EXPORT)["x-delivery-limit"] == 1
    assert topology.queue_arguments(RELINK)["x-dead-letter-exchange"] == "t1-dlx"
    assert topology.logical_name("t1-anonymize") == ANONYMIZE
    assert topology.logical_name("t1-dead-letter") == DEAD_LETTER
    assert topology.logical_name("anonymize") is None


def test_invalid_names_and_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown queue"):
        Topology().queue_name("anonymise")
    with pytest.raises(ValueError, match="max_deliveries"):
        Topology(max_deliveries=0)
    with pytest.raises(ValueError, match="whitespace"):
        Topology(prefix="a b")


def test_retry_delay_grows_per_failure_up_to_the_maximum() -> None:
    topology = Topology(max_deliveries=8, retry_delay=2.0, retry_max_delay=20.0)
    assert [topology.delay_after(n) for n in range(1, 8)] == [2, 4, 8, 16, 20, 20, 20]
    assert topology.retry_delays() == (2, 4, 8, 16, 20)
    assert topology.retry_queue_name(ANONYMIZE, 3) == "anonymize.retry.8000ms"
    assert topology.logical_name("anonymize.retry.8000ms") == ANONYMIZE
    [spec] = [s for s in topology.retry_queues() if s.name == "relink.retry.20000ms"]
    assert spec.logical == RELINK
    assert spec.arguments["x-message-ttl"] == 20000
    assert spec.arguments["x-dead-letter-exchange"] == ""
    assert spec.arguments["x-dead-letter-routing-key"] == "relink"
    with pytest.raises(ValueError, match="retry_delay"):
        Topology(retry_delay=10, retry_max_delay=5)
    with pytest.raises(ValueError, match="work queue"):
        topology.retry_queue_name(DEAD_LETTER, 1)
