"""Commands reach a service the same way over RabbitMQ (a deployment) and over the local
endpoint of ``anon serve``: the same handlers, the same answers, the same errors."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from shared.commands.client import CommandClient
from shared.commands.local import LocalCommandClient, LocalCommandServer, control_path
from shared.commands.protocol import (
    CommandFailed,
    Registry,
    ServiceUnavailable,
)
from shared.commands.rabbit import RabbitCommandClient, RabbitCommandServer, command_queue
from tests.messaging_support import run, unique_prefix


class Refused(Exception):
    """An error whose message is meant for the caller."""


def registry() -> Registry:
    commands = Registry("qr-fetcher", (Refused,))

    async def echo(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"echo": arguments, "name": "Müller^Jürgen"}

    async def refuse(arguments: dict[str, Any]) -> dict[str, Any]:
        raise Refused("the PACS at pacs:104 did not answer")

    async def crash(arguments: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("DOE^JOHN")  # an unexpected error whose text holds PHI

    commands.add("echo", echo)
    commands.add("refuse", refuse)
    commands.add("crash", crash)
    return commands


@asynccontextmanager
async def rabbit_client(amqp_url: str) -> AsyncIterator[CommandClient]:
    prefix = unique_prefix()
    server = RabbitCommandServer(amqp_url, prefix, registry())
    await server.start()
    try:
        yield CommandClient(RabbitCommandClient(amqp_url, prefix, timeout=10))
    finally:
        await server.close()
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(command_queue(prefix, "qr-fetcher"))


@asynccontextmanager
async def local_client(data_dir: Path) -> AsyncIterator[CommandClient]:
    server = LocalCommandServer(data_dir, [registry()])
    await server.start()
    try:
        yield CommandClient(LocalCommandClient(data_dir, timeout=10))
    finally:
        await server.close()


Transport = Callable[[], Any]


@pytest.fixture(params=["rabbit", "local"])
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> Transport:
    if request.param == "rabbit":
        url: str = request.getfixturevalue("amqp_url")
        return lambda: rabbit_client(url)
    return lambda: local_client(tmp_path / "data")


def test_a_command_gets_its_answer_back_whatever_the_transport(transport: Transport) -> None:
    async def scenario() -> dict[str, Any]:
        async with transport() as client:
            return await client.run("qr-fetcher", "echo", {"study_date": "20240101-20241231"})

    assert run(scenario()) == {"echo": {"study_date": "20240101-20241231"},
                               "name": "Müller^Jürgen"}


def test_an_expected_error_reaches_the_caller_with_its_message(transport: Transport) -> None:
    async def scenario() -> None:
        async with transport() as client:
            await client.run("qr-fetcher", "refuse", {})

    with pytest.raises(CommandFailed, match="did not answer") as caught:
        run(scenario())
    assert caught.value.kind == "Refused"


def test_an_unexpected_error_is_answered_by_its_class_only(transport: Transport) -> None:
    async def scenario() -> None:
        async with transport() as client:
            await client.run("qr-fetcher", "crash", {})

    with pytest.raises(CommandFailed) as caught:
        run(scenario())
    assert caught.value.kind == "InternalError"
    assert "KeyError" in str(caught.value) and "DOE" not in str(caught.value)


def test_an_unknown_command_names_the_known_ones(transport: Transport) -> None:
    async def scenario() -> None:
        async with transport() as client:
            await client.run("qr-fetcher", "frobnicate", {})

    with pytest.raises(CommandFailed, match="echo"):
        run(scenario())


def test_no_running_service_is_reported_at_once_over_rabbitmq(amqp_url: str) -> None:
    client = CommandClient(RabbitCommandClient(amqp_url, unique_prefix(), timeout=30))

    async def scenario() -> float:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ServiceUnavailable, match="start the qr-fetcher"):
            await client.run("qr-fetcher", "echo", {})
        return asyncio.get_running_loop().time() - started

    assert run(scenario()) < 5


def test_an_unreachable_broker_is_reported_by_address() -> None:
    client = CommandClient(RabbitCommandClient("amqp://guest:secret@127.0.0.1:1/", "", 5))
    with pytest.raises(ServiceUnavailable, match=r"127\.0\.0\.1:1") as caught:
        run(client.run("qr-fetcher", "echo", {}))
    assert "secret" not in str(caught.value)


def test_no_anon_serve_on_the_data_folder_says_how_to_start_it(tmp_path: Path) -> None:
    client = CommandClient(LocalCommandClient(tmp_path, timeout=5))
    with pytest.raises(ServiceUnavailable, match="anon serve --data-dir"):
        run(client.run("qr-fetcher", "echo", {}))
    # A control file left by a crash names a port where nothing answers.
    control_path(tmp_path).write_text(json.dumps({"url": "http://127.0.0.1:1", "token": "x"}))
    with pytest.raises(ServiceUnavailable, match="no anon serve is running"):
        run(client.run("qr-fetcher", "echo", {}))


def test_the_local_endpoint_needs_the_token_of_its_owner_only_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = LocalCommandServer(tmp_path, [registry()])
        await server.start()
        try:
            mode = stat.S_IMODE(os.stat(control_path(tmp_path)).st_mode)
            assert mode == 0o600
            control = json.loads(control_path(tmp_path).read_text())
            control["token"] = "guessed"
            control_path(tmp_path).write_text(json.dumps(control))
            with pytest.raises(CommandFailed, match="token"):
                await CommandClient(LocalCommandClient(tmp_path, 5)).run("qr-fetcher", "echo",
                                                                         {})
        finally:
            await server.close()
        assert not control_path(tmp_path).exists()

    run(scenario())
