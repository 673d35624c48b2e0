"""Commands: query the PACS, retrieve studies (by reference, UID, accession list or batch
spreadsheet), export patients, switch export on and off. Long commands answer 202 at once
with the job's URL; the job shows the progress.

A query's answer shows original values (names, IDs, dates, accession numbers, UIDs) only to
a phi-reader who asks with ``phi=true`` (audited). Everyone else sees each study by a
reference, its modalities and counts, and, for a study already imported, its pseudonyms; a
retrieve names the references.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from services.index_api import commands
from services.index_api.context import (
    audited,
    bool_param,
    context,
    json_body,
    json_response,
    require,
    token_of,
    write_audit,
)
from services.index_api.problems import Problem
from shared.commands.protocol import EXPORTER, QR_FETCHER
from shared.index import audit, tokens

routes = web.RouteTableDef()

QUERY_FIELDS = ("patient_name", "patient_id", "study_date", "accession", "modality")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MAX_REFS = 1000


def _reference(ctx: Any, study_uid: str) -> str:
    return f"{ctx.site.keyed('query-ref', study_uid) % 16**24:024x}"


@routes.post("/api/v1/query")
async def query(request: web.Request) -> web.Response:
    """One study-level query of the PACS (audited: the keys used and the number found)."""
    await require(request, tokens.COMMANDS)
    phi = bool_param(request, "phi")
    if phi:
        await require(request, tokens.PHI, "pacs.query.phi")
    body = await json_body(request, QUERY_FIELDS)
    arguments: dict[str, str] = {}
    for name in QUERY_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 64 or not _printable(value):
            raise Problem(400, f"{name} must be text of at most 64 printable characters")
        if value.strip():
            arguments[name] = value.strip()
    if not arguments:
        raise Problem(400, "give at least one query key: " + ", ".join(QUERY_FIELDS))
    ctx = context(request)
    answer = await commands.run(ctx, QR_FETCHER, "query", arguments)
    studies: list[dict[str, Any]] = answer.get("studies", [])
    uids = [str(s.get("study_uid", "")) for s in studies]

    async def keep(connection: asyncpg.Connection) -> list[dict[str, Any]]:
        refs = [_reference(ctx, uid) for uid in uids]
        await connection.execute(
            "DELETE FROM query_match WHERE created_at < now() - interval '1 day'")
        await connection.executemany(
            "INSERT INTO query_match (ref, study_uid) VALUES ($1, $2)"
            " ON CONFLICT (ref) DO UPDATE SET created_at = now()", list(zip(refs, uids,
                                                                          strict=True)))
        known = {r["original_study_uid"]: r for r in await connection.fetch(
            "SELECT s.original_study_uid, s.pseudo_study_uid, p.pseudo_patient_id FROM study s"
            " JOIN patient p ON p.id = s.patient WHERE s.original_study_uid = ANY($1::text[])",
            uids)}
        shown = []
        for ref, study in zip(refs, studies, strict=True):
            match = known.get(str(study.get("study_uid", "")))
            entry: dict[str, Any] = {
                "ref": ref, "modalities": list(study.get("modalities") or []),
                "series": study.get("series_count"), "instances": study.get("instance_count"),
                "already_imported": bool(study.get("already_imported")),
                "pseudo_study_uid": match["pseudo_study_uid"] if match else None,
                "pseudo_patient_id": match["pseudo_patient_id"] if match else None,
            }
            if phi:
                entry["original"] = {k: study.get(k, "") for k in (
                    "study_uid", "patient_name", "patient_id", "study_date", "accession",
                    "description")}
            shown.append(entry)
        return shown

    shown = await audited(request, "pacs.query.phi" if phi else "pacs.query", "", keep,
                          phi=phi, detail=lambda found: {"keys": sorted(arguments),
                                                         "studies": len(found)})
    return json_response({"studies": shown})


async def _job_started(request: web.Request, answer: dict[str, Any], action: str,
                       detail: dict[str, Any]) -> web.Response:
    job = int(answer["job"])
    url = f"/api/v1/jobs/{job}"
    await write_audit(request, action, f"job {job}", audit.OK, 202,
                      {**detail, "items": answer.get("items")})
    return json_response({"job": job, "url": url, "items": answer.get("items"),
                          "lines": answer.get("lines", [])}, status=202,
                         headers={"Location": url})


def _printable(text: str) -> bool:
    return text.isprintable()


def _text_list(value: object, name: str, limit: int = MAX_REFS) -> list[str]:
    if (not isinstance(value, list) or not value or len(value) > limit
            or not all(isinstance(v, str) and 0 < len(v) <= 128 and _printable(v)
                       for v in value)):
        raise Problem(400, f"{name} must be a list of 1 to {limit} texts of 1 to 128 "
                      "printable characters")
    return list(value)


@routes.post("/api/v1/retrieves")
async def retrieve(request: web.Request) -> web.Response:
    """A retrieve of studies named by query references, Study Instance UIDs, or an
    accession list as text; 202 with the job."""
    await require(request, tokens.COMMANDS)
    body = await json_body(request, ("refs", "study_uids", "accessions"))
    given = [k for k in ("refs", "study_uids", "accessions") if k in body]
    if len(given) != 1:
        raise Problem(400, "give one of refs (from a query), study_uids or accessions")
    ctx = context(request)
    if given[0] == "refs":
        refs = _text_list(body["refs"], "refs")
        async with ctx.pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT ref, study_uid FROM query_match WHERE ref = ANY($1::text[])", refs)
        found = {r["ref"]: r["study_uid"] for r in rows}
        missing = [i + 1 for i, ref in enumerate(refs) if ref not in found]
        if missing:
            raise Problem(400, f"unknown or expired query references (positions "
                          f"{', '.join(map(str, missing[:10]))}): query again")
        arguments: dict[str, Any] = {"study_uids": [found[r] for r in refs]}
    elif given[0] == "study_uids":
        arguments = {"study_uids": _text_list(body["study_uids"], "study_uids")}
    else:
        if not isinstance(body["accessions"], str) or not body["accessions"].strip():
            raise Problem(400, "accessions must be the text of an accession list")
        arguments = {"accessions": body["accessions"]}
    answer = await commands.run(ctx, QR_FETCHER, "retrieve", arguments)
    return await _job_started(request, answer, "retrieve", {"by": given[0]})


async def _upload(request: web.Request, allowed: dict[str, str]) -> tuple[bytes, str]:
    """The uploaded file and its suffix: a body of an allowed content type, or the field
    ``file`` of a multipart/form-data body whose file name has an allowed suffix."""
    if request.content_type == "multipart/form-data":
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            raise
        except Exception:  # a malformed multipart body, whatever the parser's complaint
            raise Problem(400, "the multipart body cannot be read") from None
        field = form.get("file")
        if not isinstance(field, web.FileField):
            raise Problem(400, "the multipart body needs a file in the field 'file'")
        suffix = Path(field.filename or "").suffix.lower()
        if suffix not in allowed.values():
            raise Problem(415, f"the file must be {' or '.join(sorted(allowed.values()))}")
        return field.file.read(), suffix
    if request.content_type not in allowed:
        raise Problem(415, f"the body must be {' or '.join(sorted(allowed))} "
                      "(or multipart/form-data with a file)")
    return await request.read(), allowed[request.content_type]


@routes.post("/api/v1/retrieves/accession-list")
async def retrieve_accession_list(request: web.Request) -> web.Response:
    """An accession list as the old tool read it (one key per line, // comments, blank lines,
    SI: study UIDs): text/plain or an uploaded file; 202 with the job."""
    from shared.qr.spreadsheets import decode_text

    await require(request, tokens.COMMANDS)
    raw, _ = await _upload(request, {"text/plain": ".txt", "text/csv": ".csv"})
    text = decode_text(raw)
    if not text.strip():
        raise Problem(400, "the accession list is empty")
    answer = await commands.run(context(request), QR_FETCHER, "retrieve", {"accessions": text})
    return await _job_started(request, answer, "retrieve", {"by": "accession-list"})


@routes.post("/api/v1/retrieves/batch")
async def retrieve_batch(request: web.Request) -> web.Response:
    """A batch spreadsheet (xlsx or csv: patient ID, accession, study date, modality per row,
    or the results file of a batch query): one retrieve per row; 202 with the job."""
    from shared.qr.requests import RequestError, read_batch

    await require(request, tokens.COMMANDS)
    raw, suffix = await _upload(request, {XLSX: ".xlsx", "text/csv": ".csv"})
    with tempfile.TemporaryDirectory(prefix="batch-") as folder:
        path = Path(folder) / f"batch{suffix}"
        path.write_bytes(raw)
        try:
            rows = await asyncio.to_thread(read_batch, path)
        except (RequestError, OSError) as exc:
            raise Problem(400, str(exc).replace(str(path), "the spreadsheet")) from None
    if not rows:
        raise Problem(400, "the spreadsheet has no rows to retrieve")
    answer = await commands.run(context(request), QR_FETCHER, "retrieve",
                                {"rows": [asdict(r) for r in rows]})
    return await _job_started(request, answer, "retrieve", {"by": "batch"})


@routes.post("/api/v1/exports")
async def export(request: web.Request) -> web.Response:
    """Export patients (pseudonymous IDs) or all not yet exported; 202 with the job."""
    await require(request, tokens.COMMANDS)
    body = await json_body(request, ("patients", "all_pending", "force", "now"))
    flags = {name: body.get(name, False) for name in ("all_pending", "force", "now")}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise Problem(400, "all_pending, force and now must be true or false")
    patients = _text_list(body["patients"], "patients") if "patients" in body else None
    if bool(patients) == flags["all_pending"]:
        raise Problem(400, "give patients or all_pending: true (one of them)")
    answer = await commands.run(context(request), EXPORTER, "export", {
        "patients": patients or [], "all_pending": flags["all_pending"],
        "force": flags["force"], "settle": not flags["now"]})
    return await _job_started(request, answer, "export",
                              {"patients": len(patients or []), **flags})


@routes.get("/api/v1/export/enabled")
async def export_switch(request: web.Request) -> web.Response:
    from shared.index.configuration import export_enabled

    await require(request, tokens.STATUS)
    ctx = context(request)
    return json_response({"enabled": await export_enabled(ctx.pool,
                                                          ctx.settings.export_enabled)})


@routes.put("/api/v1/export/enabled")
async def switch_export(request: web.Request) -> web.Response:
    """Switch export on or off for every exporter (audited)."""
    from shared.index.configuration import set_export_enabled

    await require(request, tokens.COMMANDS)
    body = await json_body(request, ("enabled",))
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise Problem(400, 'the body is {"enabled": true} or {"enabled": false}')
    name = token_of(request).name

    async def act(connection: asyncpg.Connection) -> bool:
        await set_export_enabled(connection, enabled, name)
        return enabled

    await audited(request, "export.switch", "on" if enabled else "off", act, phi=False)
    return json_response({"enabled": enabled})
