"""``/livez``, ``/readyz`` and ``/metrics`` for every service (aiohttp).

``/livez`` answers 200 while the process runs. ``/readyz`` runs the readiness checks
(broker, database, object store) and answers 200 when all pass, else 503 with the name
and error class of each failing check. ``/metrics`` serves Prometheus metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from shared.observability.metrics import exposition

Check = Callable[[], Awaitable[None]]
CHECKS: web.AppKey[dict[str, Check]] = web.AppKey("checks", dict)


async def _livez(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _readyz(request: web.Request) -> web.Response:
    checks = request.app[CHECKS]
    failures: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), timeout=5)
        except Exception as exc:  # a failing dependency, reported by kind only
            failures[name] = exc.__class__.__name__
    if failures:
        return web.json_response({"status": "not ready", "failing": failures}, status=503)
    return web.json_response({"status": "ready", "checks": sorted(checks)})


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=exposition(), content_type="text/plain", charset="utf-8")


def add_health_routes(app: web.Application) -> None:
    """``/livez``, ``/readyz`` and ``/metrics`` on ``app`` (whose CHECKS are set)."""
    app.router.add_get("/livez", _livez)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)


def health_app(checks: dict[str, Check]) -> web.Application:
    app = web.Application()
    app[CHECKS] = checks
    add_health_routes(app)
    return app


async def start_health_server(
    host: str, port: int, checks: dict[str, Check]
) -> web.AppRunner:
    """Serve the health endpoints; stop with ``await runner.cleanup()``."""
    runner = web.AppRunner(health_app(checks), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
