"""What every handler of the API needs: the backends, the caller's token, permission checks,
the rate limit on original values, audited reads and request parsing.

A request to ``/api/`` carries ``Authorization: Bearer <token>``; the token is checked
against the index on every request (a revoked token stops working at once). A read of an
original value or a change of configuration is audited in the transaction that does it
(:func:`audited`); refusals of such requests (wrong role, rate limit) are audited too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from aiohttp import web

from services.index_api.problems import Handler, Problem
from shared.commands.client import CommandClient
from shared.config import Settings
from shared.index import audit, tokens
from shared.index.phi_index import Site
from shared.index.tokens import TokenInfo
from shared.messaging import Broker
from shared.observability.metrics import API_PHI_READS
from shared.storage import Buckets, ObjectStore

T = TypeVar("T")

PUBLIC_PATHS = frozenset({"/livez", "/readyz", "/metrics", "/openapi.json"})
API_PREFIX = "/api/"
TOKEN: web.RequestKey[TokenInfo] = web.RequestKey("token", TokenInfo)
TOUCH_SECONDS = 60.0


class RateLimiter:
    """A token bucket per API token: ``burst`` reads at once, refilled at ``per_minute``.
    Per process: with several API replicas each keeps its own buckets."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[int, tuple[float, float]] = {}

    def take(self, token_id: int) -> float:
        """0 when a read is allowed now (and taken), else the seconds until one is."""
        now = time.monotonic()
        level, since = self._buckets.get(token_id, (self.burst, now))
        level = min(self.burst, level + (now - since) * self.rate)
        if level >= 1.0:
            self._buckets[token_id] = (level - 1.0, now)
            return 0.0
        self._buckets[token_id] = (level, now)
        return (1.0 - level) / self.rate


@dataclass
class ApiContext:
    settings: Settings
    pool: asyncpg.Pool
    site: Site
    store: ObjectStore
    buckets: Buckets
    broker: Broker | None
    commands: CommandClient
    limiter: RateLimiter
    scp_port: int | None = None
    _touched: dict[int, float] = field(default_factory=dict)

    async def touch(self, token: TokenInfo) -> None:
        now = time.monotonic()
        if now - self._touched.get(token.id, -TOUCH_SECONDS) >= TOUCH_SECONDS:
            self._touched[token.id] = now
            await tokens.touch(self.pool, [token.id])


CONTEXT: web.AppKey[ApiContext] = web.AppKey("context", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def token_of(request: web.Request) -> TokenInfo:
    return request[TOKEN]


def client_of(request: web.Request) -> str:
    return request.remote or ""


_UNAUTHENTICATED = {"WWW-Authenticate": 'Bearer realm="anon"'}


@web.middleware
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Problem(401, "this API needs a bearer token: Authorization: Bearer <token> "
                      "(anon token create)", headers=_UNAUTHENTICATED)
    info = await tokens.authenticate(context(request).pool, presented.strip())
    if info is None:
        raise Problem(401, "the token is unknown or revoked",
                      headers={"WWW-Authenticate": 'Bearer realm="anon", error="invalid_token"'})
    request[TOKEN] = info
    await context(request).touch(info)
    return await handler(request)


async def write_audit(request: web.Request, action: str, target: str, outcome: str,
                      status: int, detail: dict[str, Any] | None = None,
                      connection: asyncpg.Connection | None = None) -> None:
    token = token_of(request)
    values = audit.values(token.name, token.role, client_of(request), action, target, outcome,
                          status, detail)
    if connection is not None:
        await connection.execute(audit.INSERT, *values)
        return
    async with context(request).pool.acquire() as own:
        await own.execute(audit.INSERT, *values)


async def require(request: web.Request, permission: str, audit_action: str | None = None,
                  target: str = "") -> TokenInfo:
    """The caller's token if its role has ``permission``; else 403 (audited when the request
    would have read PHI or changed configuration)."""
    token = token_of(request)
    if token.may(permission):
        return token
    if audit_action is not None:
        await write_audit(request, audit_action, target, audit.DENIED, 403)
    needed = {tokens.PHI: "a phi-reader token", tokens.CONFIGURE: "an admin token"}
    raise Problem(403, f"this needs {needed.get(permission, 'another role')}; "
                  f"the token {token.name} is {token.role}")


async def limit_phi_reads(request: web.Request, action: str, target: str) -> None:
    """Take one of the token's reads of original values, or refuse with 429 (audited)."""
    wait = context(request).limiter.take(token_of(request).id)
    if wait > 0:
        API_PHI_READS.labels(audit.RATE_LIMITED).inc()
        await write_audit(request, action, target, audit.RATE_LIMITED, 429)
        raise Problem(429, "too many reads of original values for this token; "
                      f"try again in {wait:.0f} s",
                      headers={"Retry-After": str(max(1, round(wait)))})


async def audited_read(
    request: web.Request, action: str, target: str,
    read: Callable[[asyncpg.Connection, tuple[str, ...]], Awaitable[T | None]], *,
    not_found: str = "not found",
) -> T:
    """:func:`audited` for a read of original values whose one statement also writes its
    audit record (:func:`audit.read_recorded`): ``read`` gets the record's fields. The
    statement is its own transaction, so the read and its record are still one; the
    round trips of BEGIN, the separate insert and COMMIT are saved."""
    await limit_phi_reads(request, action, target)
    token = token_of(request)
    record = audit.fields(token.name, token.role, client_of(request), action, target)
    async with context(request).pool.acquire() as connection:
        result = await read(connection, record)
    API_PHI_READS.labels(audit.OK if result is not None else audit.NOT_FOUND).inc()
    if result is None:
        raise Problem(404, not_found)
    return result


async def audited(
    request: web.Request, action: str, target: str,
    work: Callable[[asyncpg.Connection], Awaitable[T | None]], *,
    phi: bool = True, detail: Callable[[T], dict[str, Any]] | None = None,
    not_found: str = "not found",
) -> T:
    """Run ``work`` and write its audit record in one transaction. ``phi``: the request
    reads original values, so it is rate-limited per token first (a refusal is audited).
    ``work`` returning None is a 404 with ``not_found`` as detail, audited as such."""
    ctx = context(request)
    if phi:
        await limit_phi_reads(request, action, target)
    async with ctx.pool.acquire() as connection, connection.transaction():
        result = await work(connection)
        outcome = audit.OK if result is not None else audit.NOT_FOUND
        extra = detail(result) if (detail is not None and result is not None) else None
        await write_audit(request, action, target, outcome, 200 if result is not None else 404,
                          extra, connection)
    if phi:
        API_PHI_READS.labels(outcome).inc()
    if result is None:
        raise Problem(404, not_found)
    return result


# Request parsing: every malformed parameter is a 400 naming the parameter.

def single(request: web.Request, name: str) -> str | None:
    """The one value of a query parameter, None when absent; 400 when given twice."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise Problem(400, f"give {name} once")
    return values[0] if values else None


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = single(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise Problem(400, f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise Problem(400, f"{name} must be between {low} and {high}")
    return value


def float_param(request: web.Request, name: str) -> float | None:
    text = single(request, name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise Problem(400, f"{name} must be a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise Problem(400, f"{name} must be a finite number")
    return value


def bool_param(request: web.Request, name: str, default: bool = False) -> bool:
    text = single(request, name)
    if text is None:
        return default
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise Problem(400, f"{name} must be true or false")


def choice_param(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    text = single(request, name)
    if text is None:
        return None
    if text not in choices:
        raise Problem(400, f"{name} must be one of {', '.join(choices)}")
    return text


def text_param(request: web.Request, name: str, max_length: int = 64) -> str | None:
    text = single(request, name)
    if text is None or text.strip() == "":
        return None
    if len(text) > max_length or any(ord(c) < 32 for c in text):
        raise Problem(400, f"{name} must be at most {max_length} printable characters")
    return text.strip()


def date_param(request: web.Request, name: str) -> str | None:
    """A date as YYYYMMDD (DICOM DA); YYYY-MM-DD is accepted too."""
    text = single(request, name)
    if text is None:
        return None
    digits = text.replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        raise Problem(400, f"{name} must be a date, YYYYMMDD or YYYY-MM-DD")
    import datetime

    try:
        datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        raise Problem(400, f"{name} is not a calendar date") from None
    return digits


def paging(request: web.Request) -> tuple[int, int]:
    """(page, page_size) from ``page`` (1, ...) and ``page_size`` (1-500, default 50)."""
    page = int_param(request, "page", 1, 1, 1_000_000)
    size = int_param(request, "page_size", 50, 1, 500)
    return page, size


def paged(items: list[Any], page: int, size: int) -> dict[str, Any]:
    """A page of a listing fetched with one row more than the page holds."""
    return {"items": items[:size], "page": page, "page_size": size, "has_more": len(items) > size}


async def json_body(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object of the body, refusing fields other than ``allowed``."""
    if request.content_type != "application/json":
        raise Problem(415, "the body must be application/json")
    try:
        body = json.loads(await request.text())
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "the body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise Problem(400, f"unknown fields: {', '.join(k[:40] for k in unknown[:10])}; "
                      f"the fields are {', '.join(allowed)}")
    return body


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.json_response(value, status=status, headers=headers)
