"""The index: patients and studies (pseudonymous; original values for a phi-reader, audited),
the pseudonym lookup, the Excel workbook and the RT batch tracking files."""

from __future__ import annotations

import asyncio
import datetime
import tempfile
from collections.abc import Callable
from typing import Any

import asyncpg
from aiohttp import web

from services.index_api.context import (
    audited,
    audited_read,
    bool_param,
    choice_param,
    context,
    date_param,
    json_response,
    paged,
    paging,
    require,
    text_param,
    token_of,
)
from services.index_api.problems import Problem
from shared.index import tokens
from shared.index.lookup import PatientIdentity, read_patient_audited

routes = web.RouteTableDef()

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _like_prefix(text: str | None) -> str | None:
    if text is None:
        return None
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _day_start(digits: str | None, plus_days: int = 0) -> datetime.datetime | None:
    if digits is None:
        return None
    day = datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    day += datetime.timedelta(days=plus_days)
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)


def _iso(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _with_phi(request: web.Request, action: str) -> bool:
    """``phi=true`` asked: only for a phi-reader (a refusal is audited)."""
    wanted = bool_param(request, "phi")
    if wanted:
        await require(request, tokens.PHI, action)
    return wanted


PATIENTS = (
    "SELECT p.id, p.pseudo_patient_id, p.pseudo_patient_name, p.created_at, p.exported_at,"
    " p.original_patient_id, p.original_issuer, p.original_patient_name, p.date_offset_days,"
    " (SELECT count(*) FROM study s WHERE s.patient = p.id) AS studies,"
    " (SELECT count(*) FROM instance i WHERE i.pseudo_patient_id = p.pseudo_patient_id)"
    " AS instances"
    " FROM patient p"
    " WHERE ($1::text IS NULL OR p.pseudo_patient_id LIKE $1)"
    " AND ($2::boolean IS NULL OR (p.exported_at IS NOT NULL) = $2)"
    " AND ($3::timestamptz IS NULL OR p.created_at >= $3)"
    " AND ($4::timestamptz IS NULL OR p.created_at < $4)"
    " ORDER BY p.pseudo_patient_id LIMIT $5 OFFSET $6"
)


def _patient(row: asyncpg.Record, phi: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "pseudo_patient_id": row["pseudo_patient_id"],
        "pseudo_patient_name": row["pseudo_patient_name"],
        "studies": row["studies"], "instances": row["instances"],
        "first_seen": _iso(row["created_at"]), "exported_at": _iso(row["exported_at"]),
    }
    if phi:
        shown["original"] = {"patient_id": row["original_patient_id"],
                             "issuer": row["original_issuer"],
                             "patient_name": row["original_patient_name"],
                             "date_offset_days": row["date_offset_days"]}
    return shown


def _exported(request: web.Request) -> bool | None:
    value = choice_param(request, "exported", ("true", "false"))
    return None if value is None else value == "true"


@routes.get("/api/v1/patients")
async def list_patients(request: web.Request) -> web.Response:
    await require(request, tokens.STATUS)
    page, size = paging(request)
    search = _like_prefix(text_param(request, "search"))
    exported = _exported(request)
    since = _day_start(date_param(request, "first_seen_from"))
    until = _day_start(date_param(request, "first_seen_to"), plus_days=1)
    arguments = (search, exported, since, until, size + 1, (page - 1) * size)
    return await _listing(request, "patients.phi", PATIENTS, arguments, _patient, page, size)


async def _listing(
    request: web.Request, action: str, sql: str, arguments: tuple[Any, ...],
    shape: Callable[[asyncpg.Record, bool], dict[str, Any]], page: int, size: int,
) -> web.Response:
    """A page of a listing; with ``phi=true`` (phi-reader) its original values too, the read
    audited in its transaction and rate-limited."""
    if not await _with_phi(request, action):
        async with context(request).pool.acquire() as connection:
            rows = await connection.fetch(sql, *arguments)
        return json_response(paged([shape(r, False) for r in rows], page, size))

    async def read(connection: asyncpg.Connection) -> list[asyncpg.Record]:
        return list(await connection.fetch(sql, *arguments))

    rows = await audited(request, action, f"page {page}", read,
                         detail=lambda found: {"rows": min(len(found), size)})
    return json_response(paged([shape(r, True) for r in rows], page, size))


STUDIES = (
    "SELECT s.pseudo_study_uid, s.pseudo_study_date, s.pseudo_accession, s.created_at,"
    " s.original_study_uid, s.original_study_date, s.original_accession,"
    " p.pseudo_patient_id, p.exported_at, p.original_patient_id, p.original_patient_name,"
    " (SELECT count(DISTINCT i.pseudo_series_uid) FROM instance i WHERE i.study = s.id)"
    " AS series,"
    " (SELECT count(*) FROM instance i WHERE i.study = s.id) AS instances,"
    " (SELECT r.status FROM rt_set r WHERE r.pseudo_study_uid = s.pseudo_study_uid)"
    " AS set_status"
    " FROM study s JOIN patient p ON p.id = s.patient"
    " WHERE ($1::text IS NULL OR p.pseudo_patient_id = $1)"
    " AND ($2::text IS NULL OR s.pseudo_study_uid LIKE $2 OR p.pseudo_patient_id LIKE $2)"
    " AND ($3::text IS NULL OR s.pseudo_study_date >= $3)"
    " AND ($4::text IS NULL OR s.pseudo_study_date <= $4)"
    " AND ($5::boolean IS NULL OR (p.exported_at IS NOT NULL) = $5)"
    " ORDER BY p.pseudo_patient_id, s.pseudo_study_date, s.id LIMIT $6 OFFSET $7"
)


def _study(row: asyncpg.Record, phi: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "pseudo_study_uid": row["pseudo_study_uid"],
        "pseudo_patient_id": row["pseudo_patient_id"],
        "pseudo_study_date": row["pseudo_study_date"],
        "pseudo_accession": row["pseudo_accession"],
        "series": row["series"], "instances": row["instances"],
        "set_status": row["set_status"], "first_seen": _iso(row["created_at"]),
        "exported_at": _iso(row["exported_at"]),
    }
    if phi:
        shown["original"] = {"study_uid": row["original_study_uid"],
                             "study_date": row["original_study_date"],
                             "accession": row["original_accession"],
                             "patient_id": row["original_patient_id"],
                             "patient_name": row["original_patient_name"]}
    return shown


@routes.get("/api/v1/studies")
async def list_studies(request: web.Request) -> web.Response:
    await require(request, tokens.STATUS)
    page, size = paging(request)
    arguments = (text_param(request, "patient"), _like_prefix(text_param(request, "search")),
                 date_param(request, "study_date_from"), date_param(request, "study_date_to"),
                 _exported(request), size + 1, (page - 1) * size)
    return await _listing(request, "studies.phi", STUDIES, arguments, _study, page, size)


def _pseudonym(request: web.Request) -> str:
    value = request.match_info["pseudo_patient_id"]
    if len(value) > 64 or any(ord(c) < 32 for c in value):
        raise Problem(400, "a pseudonymous patient ID has at most 64 printable characters")
    return value


@routes.get("/api/v1/patients/{pseudo_patient_id}")
async def patient(request: web.Request) -> web.Response:
    await require(request, tokens.STATUS)
    pseudonym = _pseudonym(request)
    async with context(request).pool.acquire() as connection:
        rows = await connection.fetch(
            PATIENTS.replace("p.pseudo_patient_id LIKE $1", "p.pseudo_patient_id = $1"),
            pseudonym, None, None, None, 1, 0)
        if not rows:
            raise Problem(404, "no patient has this pseudonymous ID")
        studies = await connection.fetch(STUDIES, pseudonym, None, None, None, None, 10_000, 0)
    shown = _patient(rows[0], False)
    shown["study_list"] = [_study(s, False) for s in studies]
    return json_response(shown)


def _identity(found: PatientIdentity) -> dict[str, Any]:
    # As dataclasses.asdict would, written out: asdict's deep copies cost more than the
    # rest of the answer.
    return {
        "pseudo_patient_id": found.pseudo_patient_id,
        "pseudo_patient_name": found.pseudo_patient_name,
        "original_patient_id": found.original_patient_id,
        "original_issuer": found.original_issuer,
        "original_patient_name": found.original_patient_name,
        "date_offset_days": found.date_offset_days,
        "studies": [{"pseudo_study_uid": s.pseudo_study_uid,
                     "pseudo_study_date": s.pseudo_study_date,
                     "pseudo_accession": s.pseudo_accession,
                     "original_study_uid": s.original_study_uid,
                     "original_study_date": s.original_study_date,
                     "original_accession": s.original_accession} for s in found.studies],
    }


@routes.get("/api/v1/patients/{pseudo_patient_id}/original")
async def original(request: web.Request) -> web.Response:
    """The pseudonym lookup: the original patient and studies (phi-reader; audited)."""
    pseudonym = _pseudonym(request)
    await require(request, tokens.PHI, "patient.phi", pseudonym)

    async def read(connection: asyncpg.Connection, record: tuple[str, ...]
                   ) -> PatientIdentity | None:
        return await read_patient_audited(connection, pseudonym, record)

    found = await audited_read(request, "patient.phi", pseudonym, read,
                               not_found="no patient has this pseudonymous ID")
    return json_response(_identity(found))


@routes.get("/api/v1/index.xlsx")
async def workbook(request: web.Request) -> web.StreamResponse:
    """The whole index as the RSNA Anonymizer's Excel workbook; original values only with
    ``phi=true`` (phi-reader; audited)."""
    from shared.index.workbook import index_workbook

    await require(request, tokens.STATUS)
    phi = await _with_phi(request, "index.workbook.phi")
    pool = context(request).pool
    # A large index makes a large file: written to a temporary file, then sent from it.
    with tempfile.TemporaryFile() as out:
        if phi:
            async def write(connection: asyncpg.Connection) -> int:
                return await index_workbook(pool, True, out)

            studies = await audited(request, "index.workbook.phi", "index", write,
                                    detail=lambda count: {"studies": count})
        else:
            studies = await index_workbook(pool, False, out)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")
        response = web.StreamResponse(headers={
            "Content-Type": XLSX, "X-Studies": str(studies),
            "Content-Disposition": f'attachment; filename="index-{stamp}.xlsx"'})
        response.content_length = out.seek(0, 2)
        out.seek(0)
        await response.prepare(request)
        while chunk := await asyncio.to_thread(out.read, 1 << 20):
            await response.write(chunk)
        await response.write_eof()
    return response


@routes.get("/api/v1/rt-tracking")
async def tracking_days(request: web.Request) -> web.Response:
    """The days on which ``anon rt-batch`` wrote tracking rows, with their counts."""
    from shared.index.rt_tracking import tracking_dates

    await require(request, tokens.STATUS)
    days = await tracking_dates(context(request).pool)
    return json_response({"items": [{"day": d.isoformat(), "rows": n} for d, n in days]})


@routes.get("/api/v1/rt-tracking/{day}")
async def tracking_file(request: web.Request) -> web.Response:
    """One day's tracking file (original patient IDs: phi-reader; audited)."""
    from shared.index.rt_tracking import tracking_csv

    text = request.match_info["day"]
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise Problem(400, "the day is an ISO date, e.g. 2026-12-01") from None
    await require(request, tokens.PHI, "rt.tracking.phi", day.isoformat())
    pool = context(request).pool

    async def read(connection: asyncpg.Connection) -> str | None:
        content = await tracking_csv(pool, day)
        return content if content.count("\n") > 1 else None

    content = await audited(request, "rt.tracking.phi", day.isoformat(), read,
                            not_found="no tracking rows were written on this day")
    return web.Response(
        text=content, content_type="text/csv", charset="utf-8",
        headers={"Content-Disposition":
                 f'attachment; filename="tracking_{day.strftime("%Y%m%d")}.csv"'})


@routes.get("/api/v1/session")
async def session(request: web.Request) -> web.Response:
    """Who the token is and what its role may do."""
    token = token_of(request)
    return json_response({"name": token.name, "role": token.role,
                          "permissions": sorted(tokens.PERMISSIONS[token.role])})

