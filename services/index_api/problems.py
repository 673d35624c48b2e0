"""Errors as ``application/problem+json`` (RFC 9457).

Every refusal of the API is a :class:`Problem`: a status, a short title and a detail written
for the caller, never quoting an original value. The middleware turns aiohttp's own errors
(unknown path, wrong method, body too large) into the same form, and an unexpected exception
into a 500 that names nothing but its class in the service's log.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web

from shared.observability.logging import log_fields
from shared.observability.metrics import API_REQUESTS, API_SECONDS

log = logging.getLogger("index-api")

PROBLEM_TYPE = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(Exception):
    """A refusal: ``status``, ``detail`` for the caller, and extension members."""

    def __init__(self, status: int, detail: str, *, title: str | None = None,
                 headers: dict[str, str] | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(status: int, detail: str, title: str | None = None,
                     headers: dict[str, str] | None = None, **extensions: Any) -> web.Response:
    body = {"type": "about:blank", "title": title or HTTPStatus(status).phrase,
            "status": status, "detail": detail, **extensions}
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_TYPE,
                        headers=headers)


_AIOHTTP_DETAILS = {
    404: "there is no such resource",
    405: "this resource does not take this method",
    413: "the request body is larger than this API takes",
}


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals as problem documents; every answer counted and timed by its route template
    (never by its path, which may hold an identifier)."""
    started = time.perf_counter()
    response = await _answer(request, handler)
    route = _route(request)
    API_REQUESTS.labels(route, request.method, str(response.status)).inc()
    API_SECONDS.labels(route).observe(time.perf_counter() - started)
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(problem.status, problem.detail, problem.title,
                                problem.headers, **problem.extensions)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        detail = _AIOHTTP_DETAILS.get(exc.status, HTTPStatus(exc.status).phrase.lower())
        return problem_response(exc.status, detail, headers=headers)
    except Exception as exc:
        # By class only: an exception's text may quote a DICOM value.
        log.error("request failed", extra=log_fields(route=_route(request),
                                                     error=type(exc).__name__))
        return problem_response(500, f"the request failed ({type(exc).__name__}); "
                                "the service's log has the details")


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    if resource is None:  # no route matched (404, 405)
        return "(unmatched)"
    return resource.canonical
