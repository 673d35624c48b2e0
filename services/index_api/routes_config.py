"""Configuration (admin): the active anonymizer script and filter (view, replace after
validation, reset), the SITEID, tokens, and the audit trail. Every change and every read
of the audit trail is audited in its transaction."""

from __future__ import annotations

import datetime
from typing import Any

import asyncpg
from aiohttp import web

from services.index_api.context import (
    audited,
    context,
    int_param,
    json_body,
    json_response,
    require,
    single,
    text_param,
    token_of,
)
from services.index_api.problems import Problem
from shared.index import audit, tokens

routes = web.RouteTableDef()

KINDS = ("script", "filter")


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in KINDS:
        raise Problem(404, "the documents are script and filter")
    return kind


def _document(document: Any) -> dict[str, Any]:
    shown = {name: getattr(document, name, None) for name in (
        "kind", "source", "text", "dialect", "sha256", "version", "changed_by", "name")}
    changed = getattr(document, "changed_at", None)
    shown["changed_at"] = changed.isoformat() if changed is not None else None
    options = getattr(document, "options", None)
    if options is not None:
        shown["options"] = list(options)
    return shown


async def _active(request: web.Request, kind: str) -> Any:
    from shared.index.configuration import active_filter, active_script

    ctx = context(request)
    read = active_script if kind == "script" else active_filter
    return await read(ctx.pool, ctx.settings)


@routes.get("/api/v1/config/{kind}")
async def view(request: web.Request) -> web.Response:
    kind = _kind(request)
    await require(request, tokens.CONFIGURE, f"config.{kind}.view")
    ctx = context(request)

    async def read(connection: asyncpg.Connection) -> Any:
        from shared.index.configuration import active_filter, active_script

        reader = active_script if kind == "script" else active_filter
        return await reader(connection, ctx.settings)

    document = await audited(request, f"config.{kind}.view", kind, read, phi=False,
                             detail=lambda d: {"version": d.version, "source": d.source})
    return json_response(_document(document))


@routes.get("/api/v1/config/{kind}/history")
async def history(request: web.Request) -> web.Response:
    """Every change of the script or filter, newest first: what was in force when."""
    from shared.index.configuration import document_history

    kind = _kind(request)
    await require(request, tokens.CONFIGURE, f"config.{kind}.history")
    limit = int_param(request, "limit", 50, 1, 1000)
    changes = await document_history(context(request).pool, kind, limit)
    return json_response({"items": [{
        "kind": c.kind, "version": c.version, "source": c.source, "text": c.text,
        "dialect": c.dialect, "sha256": c.sha256, "changed_at": c.changed_at.isoformat(),
        "changed_by": c.changed_by,
        "replaced_at": c.replaced_at.isoformat() if c.replaced_at else None,
    } for c in changes]})


async def _document_text(request: web.Request) -> tuple[str, str]:
    """The text of a script or filter in the body (text/plain, UTF-8) and the dialect asked."""
    if request.content_type != "text/plain":
        raise Problem(415, "the body must be text/plain: the script or filter itself")
    try:
        text = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "the body must be UTF-8 text") from None
    dialect = single(request, "dialect")
    dialect = "auto" if dialect is None else dialect
    if dialect not in ("auto", "ctp", "rsna"):
        raise Problem(400, "dialect must be auto, ctp or rsna")
    return text, dialect


def _invalid(kind: str, exc: Any) -> Problem:
    return Problem(422, f"the {kind} is not valid: {exc}", title="Invalid document",
                   line=exc.line, reason=exc.reason)


@routes.post("/api/v1/config/{kind}/check")
async def check(request: web.Request) -> web.Response:
    """Validate a script or filter without saving it: 200 when it could replace the
    active one, else 422 with the line and the reason."""
    from shared.index.configuration import InvalidDocument, check_document

    kind = _kind(request)
    await require(request, tokens.CONFIGURE)
    text, dialect = await _document_text(request)
    try:
        read_as = check_document(kind, text, dialect)
    except InvalidDocument as exc:
        raise _invalid(kind, exc) from None
    return json_response({"valid": True, "dialect": read_as})


@routes.put("/api/v1/config/{kind}")
async def replace(request: web.Request) -> web.Response:
    """Replace the script or filter with the text of the body (text/plain), validated first:
    an invalid one is refused (422) with the line and the reason, and the old one stays."""
    from shared.index.configuration import InvalidDocument, replace_document

    kind = _kind(request)
    await require(request, tokens.CONFIGURE, f"config.{kind}.replace")
    text, dialect = await _document_text(request)
    name = token_of(request).name
    try:
        async def act(connection: asyncpg.Connection) -> Any:
            return await replace_document(connection, kind, text, name, dialect=dialect)

        document = await audited(request, f"config.{kind}.replace", kind, act, phi=False,
                                 detail=lambda d: {"version": getattr(d, "version", None),
                                                   "sha256": getattr(d, "sha256", None)})
    except InvalidDocument as exc:
        await _refused(request, f"config.{kind}.replace", kind, exc.line)
        raise _invalid(kind, exc) from None
    return json_response(_document(document))


async def _refused(request: web.Request, action: str, kind: str, line: int | None) -> None:
    from services.index_api.context import write_audit

    await write_audit(request, action, kind, audit.INVALID, 422, {"line": line})


@routes.delete("/api/v1/config/{kind}")
async def reset(request: web.Request) -> web.Response:
    """Go back to what the settings name (SCRIPT_PATH or the built-in profile; FILTER_PATH)."""
    from shared.index.configuration import reset_document

    kind = _kind(request)
    await require(request, tokens.CONFIGURE, f"config.{kind}.reset")
    name = token_of(request).name

    async def act(connection: asyncpg.Connection) -> bool:
        await reset_document(connection, kind, name)
        return True

    await audited(request, f"config.{kind}.reset", kind, act, phi=False)
    return json_response(_document(await _active(request, kind)))


@routes.get("/api/v1/site")
async def site(request: web.Request) -> web.Response:
    await require(request, tokens.STATUS)
    async with context(request).pool.acquire() as connection:
        created = await connection.fetchval("SELECT created_at FROM site")
    return json_response({"site_id": context(request).site.site_id,
                          "created_at": created.isoformat() if created else None})


@routes.get("/api/v1/audit")
async def audit_trail(request: web.Request) -> web.Response:
    """The audit trail, newest first (admin; reading it is audited too)."""
    await require(request, tokens.CONFIGURE, "audit.read")
    limit = int_param(request, "limit", 100, 1, 1000)
    before = int_param(request, "before", 0, 0, 2**62)
    actor = text_param(request, "actor", 80)
    since_text = single(request, "since")
    since = None
    if since_text is not None:
        try:
            since = datetime.datetime.fromisoformat(since_text)
        except ValueError:
            raise Problem(400, "since must be an ISO date or date-time") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=datetime.UTC)
    events = await audit.read(context(request).pool, since=since, limit=limit, actor=actor,
                              before_id=before or None)

    async def note(connection: asyncpg.Connection) -> int:
        return len(events)

    await audited(request, "audit.read", "", note, phi=False,
                  detail=lambda n: {"records": n})
    return json_response({"items": [e.public() for e in events]})


@routes.get("/api/v1/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    await require(request, tokens.CONFIGURE, "token.list")
    found = await tokens.list_tokens(context(request).pool)
    return json_response({"items": [t.public() for t in found]})


@routes.post("/api/v1/tokens")
async def create_token(request: web.Request) -> web.Response:
    """A new token, shown in this answer only (audited)."""
    await require(request, tokens.CONFIGURE, "token.create")
    body = await json_body(request, ("name", "role"))
    name, role = body.get("name"), body.get("role")
    if not isinstance(name, str) or not isinstance(role, str):
        raise Problem(400, "the body is {\"name\": ..., \"role\": ...}")
    try:
        tokens.check_name(name)
        tokens.check_role(role)
    except tokens.TokenError as exc:
        raise Problem(400, str(exc)) from None
    creator = token_of(request).name
    made: dict[str, Any] = {}

    async def act(connection: asyncpg.Connection) -> tokens.TokenInfo:
        secret, info = await tokens.create_token(connection, name, role, creator)
        made["token"] = secret
        return info

    try:
        info = await audited(request, "token.create", name, act, phi=False,
                             detail=lambda i: {"role": i.role})
    except tokens.TokenError as exc:
        raise Problem(409, str(exc)) from None
    return json_response({**info.public(), "token": made["token"]}, status=201)


@routes.delete("/api/v1/tokens/{name}")
async def revoke_token(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await require(request, tokens.CONFIGURE, "token.revoke", name[:64])

    async def act(connection: asyncpg.Connection) -> tokens.TokenInfo | None:
        try:
            return await tokens.revoke_token(connection, name)
        except tokens.TokenError:
            return None

    info = await audited(request, "token.revoke", name[:64], act, phi=False,
                         not_found="no active token has this name")
    return json_response(info.public())

