"""The message broker on a real RabbitMQ, and the in-process broker held to the same behaviour.

Behavioural tests run over both brokers (``any_broker``); the RabbitMQ-only tests check
what only a server has: durable declarations, persistent messages, definitions import,
connections killed from the broker side and a restart of the broker in the middle of a run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import aio_pika
import pytest

from shared.messaging import (
    ANONYMIZE,
    DEAD_LETTER,
    EXPORT,
    RELINK,
    Broker,
    BrokerUnavailable,
    MemoryBroker,
    Message,
    RabbitBroker,
    Topology,
)
from tests.messaging_support import (  # noqa: F401  (fixtures)
    MAX_DELIVERIES,
    amqp_url_fixture,
    any_broker_fixture,
    close_connections,
    connected,
    make_rabbit_broker,
    rabbit_broker_fixture,
    rabbit_topology_fixture,
    rabbitmqctl,
    rabbitmqctl_json,
    run,
    start_rabbitmq_app,
    table,
    unique_prefix,
    wait_until,
)

pytestmark = pytest.mark.integration


async def _depth_is(broker: Broker, queue: str, expected: int) -> bool:
    return await broker.depth(queue) == expected


# --- behaviour, over RabbitMQ and the in-process broker ---------------------------------


def test_round_trip_keeps_body_and_correlation_id(any_broker: Broker) -> None:
    body = {"bucket": "incoming", "key": "2024/1.2.3/4.dcm", "source": "CT_1", "size": 1234,
            "note": "Zürich"}

    async def scenario() -> None:
        async with connected(any_broker) as broker:
            received: asyncio.Queue[Message] = asyncio.Queue()

            async def handler(message: Message) -> None:
                await received.put(message)

            await broker.consume(ANONYMIZE, handler)
            await broker.publish(ANONYMIZE, body, "corr-42")
            message = await asyncio.wait_for(received.get(), 15)
            assert message.body == body
            assert message.correlation_id == "corr-42"
            assert message.delivery_count == 1
            assert message.queue == ANONYMIZE
            assert len(message.message_id) == 32
            await asyncio.sleep(0.3)
            assert received.empty()
            for queue in (ANONYMIZE, RELINK, EXPORT, DEAD_LETTER):
                assert await broker.depth(queue) == 0
            assert await broker.dead_letters() == []
            with pytest.raises(ValueError):
                await broker.publish("no-such-queue", body, "corr-43")
            with pytest.raises(TypeError):
                await broker.publish(ANONYMIZE, {"pixels": b"\x00\x01"}, "corr-44")

    run(scenario())


def test_message_is_acknowledged_only_after_its_handler_returns(any_broker: Broker) -> None:
    """A consumer killed mid-handler (RabbitMQ: its connection closed by the broker; in
    process: the handler's task cancelled) gets the message again, delivery count 2."""

    async def scenario() -> None:
        async with connected(any_broker) as broker:
            deliveries: list[Message] = []
            first_tasks: list[asyncio.Task[object] | None] = []
            first_started, first_cancelled, second_done = (asyncio.Event() for _ in range(3))

            async def handler(message: Message) -> None:
                deliveries.append(message)
                if message.delivery_count == 1:
                    first_tasks.append(asyncio.current_task())
                    first_started.set()
                    try:
                        await asyncio.Event().wait()
                    except asyncio.CancelledError:
                        first_cancelled.set()
                        raise
                second_done.set()

            await broker.consume(ANONYMIZE, handler, prefetch=1)
            await broker.publish(ANONYMIZE, {"key": "slow"}, "corr-kill")
            await asyncio.wait_for(first_started.wait(), 15)
            await asyncio.sleep(0.3)
            assert not second_done.is_set()
            assert await broker.depth(ANONYMIZE) == 0  # handed out, so not ready
            if isinstance(broker, RabbitBroker):
                name = broker.topology.queue_name(ANONYMIZE)

                async def unacknowledged() -> bool:
                    rows = await rabbitmqctl_json(
                        "list_queues", "-p", "/", "name", "messages_unacknowledged"
                    )
                    counts = {r["name"]: int(r["messages_unacknowledged"]) for r in rows}
                    return counts[name] == 1

                # Queue statistics are refreshed every few seconds.
                await wait_until(unacknowledged, 15, "one unacknowledged message")
                assert await close_connections(broker.connection_name) == 1
            else:
                task = first_tasks[0]
                assert task is not None
                task.cancel()

            await asyncio.wait_for(second_done.wait(), 30)
            assert first_cancelled.is_set()
            assert [m.delivery_count for m in deliveries] == [1, 2]
            first, second = deliveries
            assert (second.body, second.correlation_id, second.message_id) == (
                first.body,
                first.correlation_id,
                first.message_id,
            )
            if isinstance(broker, RabbitBroker):
                # The same consumer got it again: it reconnected by itself (the count goes
                # up once every channel is restored, possibly after the redelivery).
                rabbit = broker
                await wait_until(lambda: rabbit.reconnects >= 1, 10, "the reconnection")
            await asyncio.sleep(0.5)
            assert len(deliveries) == 2
            assert await broker.depth(ANONYMIZE) == 0
            assert await broker.dead_letters() == []

    run(scenario())


def test_failing_message_goes_to_dead_letters_after_max_deliveries(any_broker: Broker) -> None:
    async def scenario() -> None:
        async with connected(any_broker) as broker:
            counts: list[int] = []

            async def handler(message: Message) -> None:
                counts.append(message.delivery_count)
                raise RuntimeError("cannot handle this one")

            await broker.consume(ANONYMIZE, handler)
            await broker.publish(ANONYMIZE, {"key": "bad"}, "corr-bad")
            await broker.publish(RELINK, {"key": "other"}, "corr-other")
            await wait_until(lambda: _depth_is(broker, DEAD_LETTER, 1), what="a dead letter")
            await asyncio.sleep(0.5)
            assert counts == list(range(1, MAX_DELIVERIES + 1))

            dead = await broker.dead_letters()
            assert len(dead) == 1
            letter = dead[0]
            assert letter.body == {"key": "bad"}
            assert letter.correlation_id == "corr-bad"
            assert letter.queue == ANONYMIZE
            assert letter.delivery_count == MAX_DELIVERIES
            assert await broker.dead_letters(ANONYMIZE) == dead
            assert await broker.dead_letters(RELINK) == []
            assert await broker.depth(ANONYMIZE) == 0
            assert await broker.depth(RELINK) == 1
            # Peeking leaves them in place; draining removes them.
            assert await broker.dead_letters() == dead
            assert await broker.depth(DEAD_LETTER) == 1
            assert await broker.dead_letters(drain=True) == dead
            assert await broker.depth(DEAD_LETTER) == 0
            assert await broker.dead_letters() == []

    run(scenario())


def test_prefetch_bounds_concurrent_handlers(any_broker: Broker) -> None:
    total, prefetch = 12, 3

    async def scenario() -> None:
        async with connected(any_broker) as broker:
            active = peak = 0
            done: set[int] = set()

            async def handler(message: Message) -> None:
                nonlocal active, peak
                active += 1
                peak = max(peak, active)
                try:
                    await asyncio.sleep(0.15)
                finally:
                    active -= 1
                done.add(message.body["n"])

            for n in range(total):
                await broker.publish(EXPORT, {"n": n}, f"corr-{n}")
            await broker.consume(EXPORT, handler, prefetch=prefetch)
            await wait_until(lambda: len(done) == total, what="every message handled")
            assert peak == prefetch
            assert await broker.depth(EXPORT) == 0

    run(scenario())


def test_unconnected_broker_raises_broker_unavailable(any_broker: Broker) -> None:
    async def scenario() -> None:
        with pytest.raises(BrokerUnavailable):
            await any_broker.publish(ANONYMIZE, {"key": "k"}, "corr")
        with pytest.raises(BrokerUnavailable):
            await any_broker.check()
        async with connected(any_broker) as broker:
            await broker.check()
        with pytest.raises(BrokerUnavailable):
            await any_broker.publish(ANONYMIZE, {"key": "k"}, "corr")
        with pytest.raises(BrokerUnavailable):
            await any_broker.check()

    run(scenario())


class _Outage:
    """A simulated dependency outage of ``seconds`` from :meth:`begin`: the handler fails
    (as it would on a refused database or S3 connection) and so does the check."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until = 0.0
        self.deliveries: dict[int, list[tuple[float, int]]] = {}
        self.handled: dict[int, int] = {}

    def begin(self) -> None:
        self.until = time.monotonic() + self.seconds

    @property
    def down(self) -> bool:
        return time.monotonic() < self.until

    async def check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("database at 127.0.0.1:5432 refused the connection")

    async def handler(self, message: Message) -> None:
        n = int(message.body["n"])
        self.deliveries.setdefault(n, []).append((time.monotonic(), message.delivery_count))
        if self.down:
            raise ConnectionRefusedError("storage unavailable")
        self.handled[n] = self.handled.get(n, 0) + 1


@pytest.fixture(name="backoff_broker", params=["rabbit", "memory"])
def backoff_broker_fixture(
    request: pytest.FixtureRequest, amqp_url: str
) -> Iterator[Callable[..., Broker]]:
    """Makes a broker (RabbitMQ on a topology of its own, or in-process) with five
    deliveries and the given retry delays; RabbitMQ topologies are deleted afterwards."""
    made: list[Topology] = []

    def make(delay: float, max_delay: float, **options: Any) -> Broker:
        topology = Topology(unique_prefix(), 5, retry_delay=delay, retry_max_delay=max_delay)
        if request.param == "memory":
            return MemoryBroker(topology, grace=5, **options)
        made.append(topology)
        return RabbitBroker(amqp_url, topology, grace=5, **options)

    yield make
    for topology in made:
        cleanup = make_rabbit_broker(amqp_url, topology, "cleanup")

        async def delete(broker: RabbitBroker = cleanup) -> None:
            async with connected(broker):
                await broker.delete_topology()

        run(delete())


def test_retries_back_off_so_an_outage_dead_letters_nothing(
    backoff_broker: Callable[..., Broker],
) -> None:
    """A 2-second outage, five deliveries and delays 0.2, 0.4, 0.8, 1.6 s: every message is
    handled once it is over, none is dead-lettered, and the wait before each retry grows."""
    outage, total = _Outage(2.0), 20

    async def scenario() -> None:
        async with connected(backoff_broker(0.2, 1.6)) as broker:
            await broker.consume(ANONYMIZE, outage.handler, prefetch=4)
            outage.begin()
            for n in range(total):
                await broker.publish(ANONYMIZE, {"n": n}, f"outage-{n}")
            await wait_until(lambda: len(outage.handled) == total, 30, "every message handled")
            assert await broker.dead_letters() == []
            assert await broker.depth(DEAD_LETTER) == 0
        assert set(outage.handled) == set(range(total))
        for n, deliveries in outage.deliveries.items():
            counts = [count for _, count in deliveries]
            assert counts == list(range(1, len(counts) + 1)), (n, counts)
            gaps = [b - a for (a, _), (b, _) in itertools.pairwise(deliveries)]
            for failures, gap in enumerate(gaps, start=1):
                assert gap >= 0.2 * 2 ** (failures - 1) * 0.9, (n, gaps)
            assert gaps == sorted(gaps), (n, gaps)
        longest = max(outage.deliveries.values(), key=len)
        assert len(longest) >= 3
        print("retry gaps (s):", [round(b[0] - a[0], 2) for a, b in itertools.pairwise(longest)])

    run(scenario(), timeout=60)


def test_consumers_pause_while_a_dependency_is_down(
    backoff_broker: Callable[..., Broker],
) -> None:
    """With the dependency check, a 4-second outage (far longer than the 0.35 s that five
    quick deliveries take) dead-letters nothing and spends no deliveries: the consumer
    stops taking messages until the check passes."""
    outage, total = _Outage(4.0), 30

    async def scenario() -> None:
        broker = backoff_broker(0.05, 0.1, dependencies=outage.check)
        async with connected(broker):
            await broker.consume(ANONYMIZE, outage.handler, prefetch=4)
            outage.begin()
            for n in range(total):
                await broker.publish(ANONYMIZE, {"n": n}, f"pause-{n}")
            await asyncio.sleep(1.0)
            during = sum(len(d) for d in outage.deliveries.values())
            # Only the messages already in flight were tried.
            assert during <= 4, during
            await wait_until(lambda: len(outage.handled) == total, 30, "every message handled")
            assert await broker.dead_letters() == []
        assert set(outage.handled) == set(range(total))
        assert all(count == 1 for d in outage.deliveries.values() for _, count in d)

    run(scenario(), timeout=60)


def test_redrive_moves_dead_letters_back_to_their_queue(any_broker: Broker) -> None:
    async def scenario() -> None:
        async with connected(any_broker) as broker:
            failing = True
            handled: list[tuple[str, int]] = []

            async def handler(message: Message) -> None:
                if failing:
                    raise RuntimeError("fails until fixed")
                handled.append((message.body["key"], message.delivery_count))

            await broker.publish(ANONYMIZE, {"key": "a"}, "corr-a")
            await broker.publish(ANONYMIZE, {"key": "b"}, "corr-b")
            consumer = await broker.consume(ANONYMIZE, handler)
            await wait_until(lambda: _depth_is(broker, DEAD_LETTER, 2), what="two dead letters")
            await consumer.cancel()
            assert await broker.redrive(RELINK) == 0
            assert await broker.depth(DEAD_LETTER) == 2
            assert await broker.redrive(ANONYMIZE) == 2
            assert await broker.dead_letters() == []
            assert await broker.depth(ANONYMIZE) == 2
            failing = False
            await broker.consume(ANONYMIZE, handler)
            await wait_until(lambda: len(handled) == 2, what="both handled after redrive")
            assert sorted(handled) == [("a", 1), ("b", 1)]
            assert await broker.redrive() == 0

    run(scenario())


# --- RabbitMQ only -------------------------------------------------------------------


def test_anon_redrive_moves_the_dead_letters_of_a_queue(
    amqp_url: str, rabbit_broker: RabbitBroker, rabbit_topology: Topology
) -> None:
    env = {**os.environ, "AMQP_URL": amqp_url, "QUEUE_PREFIX": rabbit_topology.prefix,
           "MAX_DELIVERIES": str(rabbit_topology.max_deliveries),
           "RETRY_DELAY_SECONDS": str(rabbit_topology.retry_delay),
           "RETRY_MAX_DELAY_SECONDS": str(rabbit_topology.retry_max_delay)}

    def anon_redrive(
        *args: str, environment: dict[str, str] = env
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "services.cli", "redrive", *args],
                              capture_output=True, text=True, env=environment, timeout=60)

    async def fail(message: Message) -> None:
        raise RuntimeError("poison")

    async def make_dead_letters() -> None:
        async with connected(rabbit_broker) as broker:
            first = await broker.consume(ANONYMIZE, fail)
            second = await broker.consume(RELINK, fail)
            await broker.publish(ANONYMIZE, {"key": "a"}, "corr-a")
            await broker.publish(RELINK, {"key": "r"}, "corr-r")
            await wait_until(lambda: _depth_is(broker, DEAD_LETTER, 2), what="two dead letters")
            await first.cancel()
            await second.cancel()

    async def depths() -> tuple[int, int, int]:
        async with connected(rabbit_broker) as broker:
            return (await broker.depth(ANONYMIZE), await broker.depth(RELINK),
                    await broker.depth(DEAD_LETTER))

    run(make_dead_letters())
    moved = anon_redrive("anonymize")
    assert moved.returncode == 0, moved.stderr
    assert "moved 1 dead letters back to anonymize; 1 left" in moved.stdout
    assert run(depths()) == (1, 0, 1)
    moved = anon_redrive()
    assert moved.returncode == 0, moved.stderr
    assert run(depths()) == (1, 1, 0)
    embedded = {k: v for k, v in env.items() if k != "AMQP_URL"}
    refused = anon_redrive(environment=embedded)
    assert refused.returncode == 2 and "AMQP_URL is not set" in refused.stderr


def test_unreachable_rabbitmq_is_reported_without_credentials() -> None:
    broker = RabbitBroker("amqp://deid:s3cret-pw@127.0.0.1:1/", Topology(prefix=unique_prefix()))
    with pytest.raises(BrokerUnavailable) as raised:
        run(broker.connect())
    assert "127.0.0.1:1" in str(raised.value)
    assert "s3cret" not in str(raised.value)
    assert "deid" not in str(raised.value)


def test_topology_is_durable_and_messages_persistent(
    amqp_url: str, rabbit_broker: RabbitBroker, rabbit_topology: Topology
) -> None:
    prefix = rabbit_topology.prefix

    async def scenario() -> None:
        async with connected(rabbit_broker) as broker:
            rows = await rabbitmqctl_json(
                "list_queues", "-p", "/", "name", "durable", "auto_delete", "type", "arguments"
            )
            queues = {row["name"]: row for row in rows if row["name"].startswith(prefix)}
            specs = rabbit_topology.queues() + rabbit_topology.retry_queues()
            assert set(queues) == {spec.name for spec in specs}
            for spec in rabbit_topology.retry_queues():
                assert table(queues[spec.name]["arguments"]) == spec.arguments
            for spec in rabbit_topology.queues():
                row = queues[spec.name]
                assert row["durable"] is True
                assert row["auto_delete"] is False
                assert table(row["arguments"]) == spec.arguments
                assert row["type"] == spec.arguments["x-queue-type"]
            work = table(queues[f"{prefix}{ANONYMIZE}"]["arguments"])
            assert work["x-queue-type"] == "quorum"
            assert work["x-delivery-limit"] == MAX_DELIVERIES - 1
            assert work["x-dead-letter-exchange"] == f"{prefix}dlx"

            rows = await rabbitmqctl_json(
                "list_exchanges", "-p", "/", "name", "type", "durable", "auto_delete"
            )
            exchanges = {row["name"]: row for row in rows}
            assert exchanges[f"{prefix}dlx"]["type"] == "direct"
            assert exchanges[f"{prefix}dlx"]["durable"] is True
            assert exchanges[f"{prefix}dlx"]["auto_delete"] is False
            rows = await rabbitmqctl_json(
                "list_bindings", "-p", "/", "source_name", "destination_name", "routing_key"
            )
            assert {
                "source_name": f"{prefix}dlx",
                "destination_name": f"{prefix}{DEAD_LETTER}",
                "routing_key": f"{prefix}{DEAD_LETTER}",
            } in rows

            await broker.publish(RELINK, {"key": "k"}, "corr-persist")
            connection = await aio_pika.connect(amqp_url)
            try:
                channel = await connection.channel()
                queue = await channel.get_queue(f"{prefix}{RELINK}", ensure=False)
                incoming = await queue.get(no_ack=False, fail=True, timeout=10)
                assert incoming is not None
                assert incoming.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
                assert incoming.content_type == "application/json"
                assert incoming.correlation_id == "corr-persist"
                assert incoming.message_id
                assert json.loads(incoming.body) == {"key": "k"}
                await incoming.ack()
            finally:
                await connection.close()

    run(scenario())


def test_definitions_document_imports_and_matches_declarations(
    rabbit_broker: RabbitBroker, rabbit_topology: Topology
) -> None:
    """What infra/rabbitmq/definitions.json holds (for another prefix) is accepted by
    ``rabbitmqctl import_definitions``, and the broker then declares the same queues
    without a conflict."""
    document = json.dumps(rabbit_topology.definitions()).encode()
    prefix = rabbit_topology.prefix

    async def scenario() -> None:
        await rabbitmqctl("import_definitions", "--format", "json", stdin=document)
        rows = await rabbitmqctl_json("list_queues", "-p", "/", "name", "arguments")
        imported = {row["name"]: table(row["arguments"]) for row in rows}
        for spec in rabbit_topology.queues():
            assert imported[spec.name] == spec.arguments
        specs = rabbit_topology.queues() + rabbit_topology.retry_queues()
        for spec in specs:
            assert imported[spec.name] == spec.arguments
        assert not any(name.startswith(prefix) for name in set(imported) - {
            spec.name for spec in specs
        })
        async with connected(rabbit_broker) as broker:
            await broker.publish(ANONYMIZE, {"key": "k"}, "corr-import")
            assert await broker.depth(ANONYMIZE) == 1

    run(scenario())


TOTAL = 200


async def _restart_scenario(
    url: str, topology: Topology, consumer_broker: RabbitBroker
) -> dict[str, float | int]:
    # A short timeout, so that publishing also fails (and is retried) during the outage.
    publisher = make_rabbit_broker(url, topology, "publisher", operation_timeout=1.5)
    handled: dict[int, int] = {}
    last_handled: dict[int, float] = {}
    published = unavailable = 0
    timings: dict[str, float | int] = {}
    start = time.monotonic()

    async def handler(message: Message) -> None:
        await asyncio.sleep(0.005)
        n = int(message.body["n"])
        handled[n] = handled.get(n, 0) + 1
        last_handled[n] = time.monotonic()

    async def publish_all() -> None:
        nonlocal published, unavailable
        for n in range(TOTAL):
            while True:
                try:
                    await publisher.publish(ANONYMIZE, {"n": n}, f"restart-{n}")
                    break
                except BrokerUnavailable:
                    unavailable += 1
                    await asyncio.sleep(0.2)
            published += 1
            await asyncio.sleep(0.02)
        timings["publishing done"] = time.monotonic() - start

    async def restart() -> None:
        await wait_until(lambda: published >= 50, 60, "50 messages published")
        timings["stop_app at"] = time.monotonic() - start
        try:
            await rabbitmqctl("stop_app")
            timings["stopped at"] = time.monotonic() - start
            await asyncio.sleep(2)
        finally:
            await rabbitmqctl("start_app")
            await rabbitmqctl("await_startup")
        timings["up again at"] = time.monotonic() - start

    async with connected(consumer_broker), connected(publisher):
        await consumer_broker.consume(ANONYMIZE, handler, prefetch=8)
        await asyncio.gather(publish_all(), restart())
        await wait_until(lambda: len(handled) == TOTAL, 120, "every message handled")
        timings["all handled at"] = time.monotonic() - start
        assert set(handled) == set(range(TOTAL))
        # Nobody called consume again: the consumer came back by itself.
        await wait_until(
            lambda: consumer_broker.reconnects >= 1 and publisher.reconnects >= 1,
            10,
            "both connections re-established",
        )
        assert unavailable >= 1
        up_again = start + timings["up again at"]
        assert sum(1 for t in last_handled.values() if t > up_again) > 0
        await wait_until(lambda: _depth_is(consumer_broker, ANONYMIZE, 0), 30, "empty queue")
        assert await consumer_broker.dead_letters() == []
    timings["publish retries"] = unavailable
    timings["handled twice"] = sum(1 for count in handled.values() if count > 1)
    return timings


@pytest.mark.exclusive
def test_no_message_lost_when_rabbitmq_restarts(
    amqp_url: str, rabbit_topology: Topology, rabbit_broker: RabbitBroker
) -> None:
    """200 messages published (retrying on BrokerUnavailable) while RabbitMQ's application
    is stopped and started again: every one is handled, without re-subscribing."""
    try:
        timings = run(_restart_scenario(amqp_url, rabbit_topology, rabbit_broker), timeout=300)
    finally:
        start_rabbitmq_app()
    print("broker restart:", ", ".join(
        f"{k} {v:.2f} s" if isinstance(v, float) else f"{k} {v}" for k, v in timings.items()
    ))
