"""Fixtures and helpers for the messaging tests.

Test modules import the fixtures (``amqp_url``, ``rabbit_topology``, ``rabbit_broker``,
``any_broker``) by their function names, ``*_fixture``.

RabbitMQ is ``TEST_AMQP_URL`` if set, else the one on 127.0.0.1:5672; tests that need it
fail (they are not skipped) when it does not answer. Every test gets a topology with a
unique queue prefix, deleted afterwards, so tests can share the broker. Some tests act on
the broker with ``rabbitmqctl`` (closing connections, restarting the application), which
must be able to reach the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aio_pika
import pytest

from shared.messaging import Broker, MemoryBroker, RabbitBroker, Topology

T = TypeVar("T")

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
MAX_DELIVERIES = 3
# Retry delays of the test topologies (seconds): short, so failures retry quickly.
RETRY_DELAY = 0.05
RETRY_MAX_DELAY = 0.2


def run(coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    """Run a test scenario in a fresh event loop, failing it if it takes over ``timeout`` s."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coroutine

    return asyncio.run(bounded())


def unique_prefix() -> str:
    """A queue-name prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}-"


def where(url: str) -> str:
    """host:port of an AMQP URL (no credentials)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


async def amqp_problem(url: str) -> str | None:
    """None if RabbitMQ at ``url`` takes a connection within 5 s, else the error's class."""
    try:
        connection = await aio_pika.connect(url, timeout=5)
    except Exception as exc:
        return type(exc).__name__
    await connection.close()
    return None


@pytest.fixture(scope="session", name="amqp_url")
def amqp_url_fixture() -> str:
    """URL of the test RabbitMQ; fails the requesting tests if it does not answer."""
    url = os.environ.get("TEST_AMQP_URL") or DEFAULT_AMQP_URL
    problem = asyncio.run(amqp_problem(url))
    if problem is not None:
        pytest.fail(
            f"RabbitMQ at {where(url)} does not answer ({problem}); start it or point "
            "TEST_AMQP_URL at one",
            pytrace=False,
        )
    return url


async def delete_topology(url: str, topology: Topology) -> None:
    """Delete every queue and exchange of ``topology`` (declared with its arguments first)."""
    broker = RabbitBroker(url, topology)
    await broker.connect()
    try:
        await broker.delete_topology()
    finally:
        await broker.close()


@pytest.fixture(name="rabbit_topology")
def rabbit_topology_fixture() -> Topology:
    """A topology of its own for one test (unique prefix, three deliveries at most)."""
    return Topology(prefix=unique_prefix(), max_deliveries=MAX_DELIVERIES,
                    retry_delay=RETRY_DELAY, retry_max_delay=RETRY_MAX_DELAY)


@pytest.fixture(name="rabbit_broker")
def rabbit_broker_fixture(amqp_url: str, rabbit_topology: Topology) -> Iterator[RabbitBroker]:
    """An unconnected RabbitBroker on the test's topology; the topology is deleted afterwards."""
    yield make_rabbit_broker(amqp_url, rabbit_topology, "consumer")
    asyncio.run(delete_topology(amqp_url, rabbit_topology))


def make_rabbit_broker(
    url: str, topology: Topology, role: str, operation_timeout: float = 10.0
) -> RabbitBroker:
    """A RabbitBroker whose connection name identifies the test's topology and a role."""
    return RabbitBroker(
        url,
        topology,
        grace=5,
        operation_timeout=operation_timeout,
        connection_name=f"{topology.prefix}{role}",
    )


@pytest.fixture(name="any_broker", params=["rabbit", "memory"])
def any_broker_fixture(request: pytest.FixtureRequest) -> Broker:
    """The broker under test: RabbitMQ (isolated topology) or in-process, unconnected."""
    if request.param == "memory":
        return MemoryBroker(Topology(max_deliveries=MAX_DELIVERIES, retry_delay=RETRY_DELAY,
                                     retry_max_delay=RETRY_MAX_DELAY), grace=5)
    rabbit: RabbitBroker = request.getfixturevalue("rabbit_broker")
    return rabbit


@asynccontextmanager
async def connected(broker: Broker) -> AsyncIterator[Broker]:
    """The broker connected for the duration of the block."""
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.close()


async def wait_until(
    condition: Callable[[], bool] | Callable[[], Awaitable[bool]],
    timeout: float = 30,
    what: str = "condition",
    interval: float = 0.05,
) -> None:
    """Poll ``condition`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


async def rabbitmqctl(*args: str, timeout: float = 120, stdin: bytes | None = None) -> str:
    """Run ``rabbitmqctl -q`` with ``args``; its output, AssertionError if it fails."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate(stdin)
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise AssertionError(
            f"rabbitmqctl {' '.join(args)} did not finish in {timeout} s"
        ) from exc
    if process.returncode != 0:
        raise AssertionError(
            f"rabbitmqctl {' '.join(args)} failed ({process.returncode}): {err.decode()}"
        )
    return out.decode()


async def rabbitmqctl_json(*args: str) -> list[dict[str, Any]]:
    """Rows of a ``rabbitmqctl list_...`` command, as dicts."""
    output = await rabbitmqctl(*args, "--formatter", "json")
    rows: list[dict[str, Any]] = json.loads(output or "[]")
    return rows


def table(entries: list[list[Any]]) -> dict[str, Any]:
    """An AMQP table as rabbitmqctl's JSON shows it ([name, type, value] triples), as a dict."""
    return {name: value for name, _type, value in entries}


async def close_connections(connection_name: str) -> int:
    """Close, from the broker side, every connection with this client-provided name."""
    rows = await rabbitmqctl_json("list_connections", "name", "client_properties")
    names = {
        row["name"]
        for row in rows
        if table(row["client_properties"]).get("connection_name") == connection_name
    }
    # close_connection takes the pid as the table output shows it, not as the JSON one.
    lines = await rabbitmqctl("list_connections", "--no-table-headers", "pid", "name")
    pids = [
        pid for pid, _, name in (line.partition("\t") for line in lines.splitlines())
        if name in names
    ]
    for pid in pids:
        await rabbitmqctl("close_connection", pid, "closed by a test")
    return len(pids)


def start_rabbitmq_app() -> None:
    """Start the RabbitMQ application (no-op if running) and wait until it is up."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["rabbitmqctl", "-q", "start_app"], check=False, timeout=180)
        subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=False, timeout=180)
