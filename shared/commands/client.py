"""Calling a running system's commands: one client whatever the transport."""

from __future__ import annotations

from typing import Any, Protocol

from shared.commands.protocol import Registry, ServiceUnavailable, request, result_of
from shared.config import Settings


class Transport(Protocol):
    async def call(self, service: str, body: dict[str, Any]) -> dict[str, Any]: ...


class CommandClient:
    """``await client.run("qr-fetcher", "query", {...})`` gives the result of a command or
    raises :class:`~shared.commands.protocol.CommandError`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def run(self, service: str, command: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return result_of(await self.transport.call(service, request(command, arguments)))


class InProcessTransport:
    """The registries of services running in this process (``anon serve``'s index API)."""

    def __init__(self, registries: list[Registry]) -> None:
        self.registries = {registry.service: registry for registry in registries}

    async def call(self, service: str, body: dict[str, Any]) -> dict[str, Any]:
        registry = self.registries.get(service)
        if registry is None:
            raise ServiceUnavailable(f"no {service} runs in this system")
        return await registry.answer(body)


def command_client(settings: Settings) -> CommandClient:
    """RabbitMQ when ``AMQP_URL`` is set (a deployment), else the ``anon serve`` of
    ``DATA_DIR``."""
    if settings.amqp_url:
        from shared.commands.rabbit import RabbitCommandClient

        return CommandClient(RabbitCommandClient(settings.amqp_url, settings.queue_prefix,
                                                 settings.command_timeout_seconds))
    from shared.commands.local import LocalCommandClient

    return CommandClient(LocalCommandClient(settings.data_dir, settings.command_timeout_seconds))
