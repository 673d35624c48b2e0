"""Calling the services' commands from the API, and their failures as problems."""

from __future__ import annotations

from typing import Any

from services.index_api.context import ApiContext
from services.index_api.problems import Problem
from shared.commands.protocol import CommandFailed, ServiceUnavailable

# The status answered for a service's refusal, by the kind of error it names.
_STATUS = {
    "BadRequest": 400, "EmptyRequest": 400, "RequestError": 400, "ValueError": 400,
    "SpreadsheetError": 400, "UnknownCommand": 400,
    "NothingToExport": 409, "ExportDisabled": 409,
    "NotConfigured": 503, "ExportNotConfigured": 503,
    "PeerUnreachable": 502, "AssociationRefused": 502, "PeerFailed": 502,
    "OperationTimeout": 504, "TooManyMatches": 422,
}


async def run(
    ctx: ApiContext, service: str, command: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """The result of a command; a :class:`Problem` when it is refused or nobody answers.
    The services word their refusals for an operator, without PHI."""
    try:
        return await ctx.commands.run(service, command, arguments)
    except ServiceUnavailable as exc:
        raise Problem(503, str(exc)) from None
    except CommandFailed as exc:
        status = _STATUS.get(exc.kind, 502)
        raise Problem(status, f"{service} refused the command: {exc}", kind=exc.kind) from None
