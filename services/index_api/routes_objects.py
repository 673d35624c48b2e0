"""De-identified objects: the instances of a study, an object's elements, a frame as PNG.

Objects are found by their pseudonymous SOP Instance UID in the de-identified bucket; an
original object is never read here (an original UID finds nothing)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.index_api.context import (
    context,
    float_param,
    json_response,
    paged,
    paging,
    require,
)
from services.index_api.problems import Problem
from shared.index import tokens
from shared.storage import ObjectNotFound

routes = web.RouteTableDef()


def _uid(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not 0 < len(value) <= 64 or not all(c.isdigit() or c == "." for c in value):
        raise Problem(400, f"{name.replace('_', ' ')} must be a UID (digits and dots, at most 64)")
    return value


@routes.get("/api/v1/studies/{pseudo_study_uid}/instances")
async def instances(request: web.Request) -> web.Response:
    await require(request, tokens.STATUS)
    study = _uid(request, "pseudo_study_uid")
    page, size = paging(request)
    async with context(request).pool.acquire() as connection:
        known = await connection.fetchval(
            "SELECT id FROM study WHERE pseudo_study_uid = $1", study)
        if known is None:
            raise Problem(404, "no study has this pseudonymous Study Instance UID")
        rows = await connection.fetch(
            "SELECT pseudo_sop_instance_uid, pseudo_series_uid, sop_class_uid, modality,"
            " size_bytes, object_key IS NOT NULL AS stored FROM instance WHERE study = $1"
            " ORDER BY pseudo_series_uid, id LIMIT $2 OFFSET $3",
            known, size + 1, (page - 1) * size)
    items = [{"pseudo_sop_instance_uid": r["pseudo_sop_instance_uid"],
              "pseudo_series_uid": r["pseudo_series_uid"], "sop_class_uid": r["sop_class_uid"],
              "modality": r["modality"], "size_bytes": r["size_bytes"], "stored": r["stored"]}
             for r in rows]
    return json_response(paged(items, page, size))


async def _object(request: web.Request) -> bytes:
    uid = _uid(request, "pseudo_sop_instance_uid")
    ctx = context(request)
    async with ctx.pool.acquire() as connection:
        key = await connection.fetchval(
            "SELECT object_key FROM instance WHERE pseudo_sop_instance_uid = $1"
            " AND object_key IS NOT NULL ORDER BY id DESC LIMIT 1", uid)
    if key is None:
        raise Problem(404, "no stored de-identified object has this SOP Instance UID")
    try:
        return await ctx.store.get(ctx.buckets.deidentified, key)
    except ObjectNotFound:
        raise Problem(404, "the de-identified object is no longer stored") from None


@routes.get("/api/v1/instances/{pseudo_sop_instance_uid}/elements")
async def elements(request: web.Request) -> web.Response:
    """The elements of a de-identified object, file meta and transfer syntax included."""
    from shared.dicom.elements import ElementsError, list_elements, to_json
    from shared.dicom.render import RenderError, frame_count

    await require(request, tokens.STATUS)
    data = await _object(request)
    try:
        listed = await asyncio.to_thread(list_elements, data)
    except ElementsError as exc:
        raise Problem(422, f"the object cannot be listed: {exc}") from None
    shown = to_json(listed)
    try:
        shown["frames"] = await asyncio.to_thread(frame_count, data)
    except RenderError:
        shown["frames"] = 0
    return json_response(shown)


@routes.get("/api/v1/instances/{pseudo_sop_instance_uid}/frames/{frame}")
async def frame(request: web.Request) -> web.Response:
    """Frame N (1, 2, ...) as PNG, with an optional window ``center`` and ``width``."""
    from shared.dicom.render import RenderError, frame_count, render_png

    await require(request, tokens.STATUS)
    text = request.match_info["frame"].removesuffix(".png")
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise Problem(400, "the frame number is 1, 2, ...")
    center = float_param(request, "center")
    width = float_param(request, "width")
    if width is not None and width <= 0:
        raise Problem(400, "width must be greater than 0")
    data = await _object(request)
    try:
        frames = await asyncio.to_thread(frame_count, data)
    except RenderError as exc:
        raise Problem(422, f"the object cannot be rendered: {exc}") from None
    if int(text) > frames:
        raise Problem(404, f"the object has {frames} frame{'' if frames == 1 else 's'}")
    try:
        png = await asyncio.to_thread(render_png, data, int(text) - 1, center, width)
    except RenderError as exc:
        raise Problem(422, f"the frame cannot be rendered: {exc}") from None
    return web.Response(body=png, content_type="image/png",
                        headers={"Cache-Control": "private, max-age=300"})
