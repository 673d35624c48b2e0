"""Status: counts, RT sets, jobs, the quarantine, and recent errors (no original values)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import asyncpg
from aiohttp import web

from services.index_api.context import (
    audited,
    choice_param,
    context,
    int_param,
    json_body,
    json_response,
    paged,
    paging,
    require,
    text_param,
)
from services.index_api.problems import Problem
from shared import quarantine
from shared.index import jobs, tokens
from shared.index.phi_index import PhiIndex
from shared.rt.store import problems_of

routes = web.RouteTableDef()


@routes.get("/api/v1/status")
async def status(request: web.Request) -> web.Response:
    """What the system received, de-identified, quarantined and exported."""
    from shared.index.configuration import export_enabled

    await require(request, tokens.STATUS)
    ctx = context(request)
    counts = await PhiIndex(ctx.pool, cache_size=1).pipeline_counts()
    async with ctx.pool.acquire() as connection:
        reasons = await connection.fetch(
            "SELECT reason_code, count(*) AS objects FROM quarantined_object"
            " GROUP BY reason_code ORDER BY count(*) DESC, reason_code")
        exported = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM patient WHERE exported_at IS NOT NULL) AS patients,"
            " (SELECT count(*) FROM export_instance WHERE status = 'sent') AS instances_sent,"
            " (SELECT count(*) FROM export_instance WHERE status = 'failed')"
            " AS instances_failed")
        open_jobs = await connection.fetch(
            "SELECT kind, count(*) AS jobs FROM job"
            " WHERE status IN ('queued', 'running') GROUP BY kind")
    assert exported is not None
    settings = ctx.settings
    return json_response({
        "site_id": ctx.site.site_id,
        "received": counts["received"], "deidentified": counts["deidentified"],
        "quarantined": counts["quarantined"],
        "quarantine_reasons": [dict(r) for r in reasons],
        "patients": counts["patients"], "studies": counts["studies"],
        "exported": {"patients": exported["patients"],
                     "instances_sent": exported["instances_sent"],
                     "instances_failed": exported["instances_failed"]},
        "rt_sets": {"complete": counts["sets_complete"], "waiting": counts["sets_waiting"],
                    "inconsistent": counts["sets_inconsistent"]},
        "open_jobs": {r["kind"]: r["jobs"] for r in open_jobs},
        "export_enabled": await export_enabled(ctx.pool, settings.export_enabled),
        # anon serve passes the port of the SCP it runs; index-api alone does not run one.
        "storage_scp": {"ae_title": settings.scp_ae_title,
                        "port": ctx.scp_port if ctx.scp_port is not None else settings.scp_port,
                        "state": "listening" if ctx.scp_port is not None else "elsewhere"},
    })


@routes.get("/api/v1/rt-sets")
async def rt_sets(request: web.Request) -> web.Response:
    """Each study's set: complete, waiting for objects, or inconsistent, with its problems."""
    await require(request, tokens.STATUS)
    page, size = paging(request)
    wanted = choice_param(request, "status", ("complete", "waiting", "inconsistent"))
    study = text_param(request, "study", 64)
    items = []
    # One snapshot: each set's problems are those of the status it shows.
    async with context(request).pool.acquire() as connection, connection.transaction(
            isolation="repeatable_read", readonly=True):
        rows = await connection.fetch(
            "SELECT pseudo_study_uid, kind, status, objects, problems::text AS problems,"
            " checked_at FROM rt_set"
            " WHERE ($1::text IS NULL OR status = $1)"
            " AND ($2::text IS NULL OR pseudo_study_uid = $2)"
            " ORDER BY checked_at DESC, pseudo_study_uid LIMIT $3 OFFSET $4",
            wanted, study, size + 1, (page - 1) * size)
        for r in rows[:size]:
            found = await problems_of(connection, r["pseudo_study_uid"], r["problems"])
            items.append({"pseudo_study_uid": r["pseudo_study_uid"], "kind": r["kind"],
                          "status": r["status"], "objects": r["objects"],
                          "problems": [asdict(p) for p in found],
                          "checked_at": r["checked_at"].isoformat()})
    return json_response(paged([*items, *rows[size:]], page, size))  # the extra row: counted


@routes.get("/api/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """Retrieves and exports, newest first, with their progress."""
    await require(request, tokens.STATUS)
    page, size = paging(request)
    kind = choice_param(request, "kind", (jobs.RETRIEVE, jobs.EXPORT))
    wanted = choice_param(request, "status",
                          ("queued", "running", "complete", "incomplete", "failed"))
    pool = context(request).pool
    async with pool.acquire() as connection:
        ids = [r["id"] for r in await connection.fetch(
            "SELECT id FROM job WHERE ($1::text IS NULL OR kind = $1)"
            " AND ($2::text IS NULL OR status = $2) ORDER BY id DESC LIMIT $3 OFFSET $4",
            kind, wanted, size + 1, (page - 1) * size)]
    found = await jobs.list_jobs(pool, limit=size + 1, ids=ids) if ids else []
    return json_response(paged([j.public() for j in found], page, size))


def job_id(request: web.Request) -> int:
    text = request.match_info["job"]
    if not text.isdigit() or len(text) > 18:
        raise Problem(400, "a job number is a positive whole number")
    return int(text)


@routes.get("/api/v1/jobs/{job}")
async def get_job(request: web.Request) -> web.Response:
    await require(request, tokens.STATUS)
    try:
        job = await jobs.get_job(context(request).pool, job_id(request))
    except jobs.JobNotFound:
        raise Problem(404, "there is no job with this number") from None
    return json_response(job.public())


def _entry(entry: quarantine.QuarantineEntry) -> dict[str, Any]:
    return {"key": entry.key, "stage": entry.stage, "reason_code": entry.reason_code,
            "reason": entry.reason, "quarantined_at": entry.quarantined_at.isoformat()}


@routes.get("/api/v1/quarantine")
async def list_quarantine(request: web.Request) -> web.Response:
    """Objects refused, with the reason (keys are hashes; reasons name tags, not values)."""
    await require(request, tokens.STATUS)
    page, size = paging(request)
    code = text_param(request, "reason_code", 64)
    async with context(request).pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT key, stage, reason_code, reason, quarantined_at FROM quarantined_object"
            " WHERE ($1::text IS NULL OR reason_code = $1)"
            " ORDER BY quarantined_at DESC, key LIMIT $2 OFFSET $3",
            code, size + 1, (page - 1) * size)
    items = [_entry(quarantine.QuarantineEntry(**dict(r))) for r in rows]
    return json_response(paged(items, page, size))


@routes.post("/api/v1/quarantine/release")
async def release(request: web.Request) -> web.Response:
    """Send a quarantined object through the pipeline again (admin; audited)."""
    await require(request, tokens.CONFIGURE, "quarantine.release")
    body = await json_body(request, ("key", "accept_burned_in_annotation"))
    key = body.get("key")
    accept = body.get("accept_burned_in_annotation", False)
    if not isinstance(key, str) or not key or len(key) > 300:
        raise Problem(400, "key must be the key of a quarantined object")
    if not isinstance(accept, bool):
        raise Problem(400, "accept_burned_in_annotation must be true or false")
    ctx = context(request)

    async def act(connection: asyncpg.Connection) -> str | None:
        try:
            return await quarantine.release(
                ctx.store, ctx.buckets, PhiIndex(ctx.pool, cache_size=1), ctx.broker, key,
                accept_burned_in_annotation=accept)
        except quarantine.NotQuarantined:
            return None

    target = await audited(request, "quarantine.release", key, act, phi=False,
                           detail=lambda _: {"accept_burned_in_annotation": accept},
                           not_found="no quarantined object has this key")
    return json_response({"released": key, "incoming_key": target}, status=202)


@routes.post("/api/v1/quarantine/purge")
async def purge(request: web.Request) -> web.Response:
    """Delete quarantined objects, all or those older than some days (admin; audited)."""
    await require(request, tokens.CONFIGURE, "quarantine.purge")
    body = await json_body(request, ("older_than_days",))
    days = body.get("older_than_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int | float)
                             or not 0 <= days <= 36500):
        raise Problem(400, "older_than_days must be a number of days from 0 to 36500, or null")
    ctx = context(request)

    async def act(connection: asyncpg.Connection) -> int:
        return await quarantine.purge(ctx.store, ctx.buckets, PhiIndex(ctx.pool, cache_size=1),
                                      days)

    purged = await audited(request, "quarantine.purge", "", act, phi=False,
                           detail=lambda n: {"purged": n, "older_than_days": days})
    return json_response({"purged": purged})


@routes.get("/api/v1/log")
async def recent_log(request: web.Request) -> web.Response:
    """Recent warnings and errors of every service (their messages carry no PHI)."""
    from datetime import UTC, datetime, timedelta

    from shared.observability.error_log import recent_errors

    await require(request, tokens.STATUS)
    limit = int_param(request, "limit", 100, 1, 1000)
    minutes = int_param(request, "since_minutes", 0, 0, 525_600)
    since = datetime.now(UTC) - timedelta(minutes=minutes) if minutes else None
    service = text_param(request, "service", 64)
    rows = await recent_errors(context(request).pool, limit=limit, since=since, service=service)
    return json_response({"items": [_jsonable(r) for r in rows]})


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
