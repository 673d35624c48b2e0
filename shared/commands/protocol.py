"""The request and answer format of commands, and the registry of a service's handlers.

A handler takes the command's arguments and returns a JSON object. It raises
:class:`CommandFailed` (or one of the error classes given to the registry) for a failure
the caller should read: the answer then carries the error's class name and message, which
are written for an operator and hold no PHI. Any other exception is answered as an
internal error whose message names only its class; the service logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from shared.observability.logging import log_fields

log = logging.getLogger(__name__)

QR_FETCHER = "qr-fetcher"
EXPORTER = "exporter"
SERVICES = (QR_FETCHER, EXPORTER)

CommandHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class CommandError(Exception):
    """A command could not be delivered or was refused; the message says why."""


class CommandFailed(CommandError):
    """The service answered that the command failed; ``kind`` is the error's type."""

    def __init__(self, message: str, kind: str = "CommandFailed") -> None:
        super().__init__(message)
        self.kind = kind


class ServiceUnavailable(CommandError):
    """No service took the command (not running, or no answer in time)."""


def request(command: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"command": command, "arguments": arguments}


def success(result: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "result": result}


def failure(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"type": kind, "message": message}}


def result_of(answer: dict[str, Any]) -> dict[str, Any]:
    """The result of an answer; :class:`CommandFailed` when it reports a failure."""
    if answer.get("ok") is True and isinstance(answer.get("result"), dict):
        result: dict[str, Any] = answer["result"]
        return result
    error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
    assert isinstance(error, dict)
    raise CommandFailed(str(error.get("message") or "the service refused the command"),
                        str(error.get("type") or "CommandFailed"))


class Registry:
    """The commands one service answers, and the error classes whose messages are meant
    for the caller (their messages hold no PHI by construction)."""

    def __init__(self, service: str, expected: tuple[type[Exception], ...] = ()) -> None:
        self.service = service
        self.handlers: dict[str, CommandHandler] = {}
        self.expected: tuple[type[Exception], ...] = (CommandFailed, *expected)

    def add(self, name: str, handler: CommandHandler) -> None:
        self.handlers[name] = handler

    async def answer(self, body: object) -> dict[str, Any]:
        """The answer to one request body (never raises)."""
        if not isinstance(body, dict) or not isinstance(body.get("command"), str):
            return failure("BadRequest", "a command is a JSON object with a 'command' name")
        handler = self.handlers.get(body["command"])
        if handler is None:
            return failure("UnknownCommand", f"{self.service} has no command "
                           f"{body['command'][:40]!r}; it has {', '.join(sorted(self.handlers))}")
        arguments = body.get("arguments") or {}
        if not isinstance(arguments, dict):
            return failure("BadRequest", "the arguments of a command are a JSON object")
        try:
            return success(await handler(arguments))
        except self.expected as exc:
            return failure(getattr(exc, "kind", type(exc).__name__), str(exc))
        except Exception as exc:
            # By class only: an unexpected error's text may quote a DICOM value.
            log.error("command failed", extra=log_fields(command=body["command"],
                                                         error=type(exc).__name__))
            return failure("InternalError", f"{self.service} failed on {body['command']} "
                           f"({type(exc).__name__}); its log has the details")
