"""The index API's aiohttp application: middlewares, routes, health endpoints, the
OpenAPI document and the web console."""

from __future__ import annotations

from aiohttp import web

from services.index_api import (
    routes_commands,
    routes_config,
    routes_index,
    routes_objects,
    routes_status,
)
from services.index_api.context import CONTEXT, ApiContext, authentication
from services.index_api.openapi import document
from services.index_api.problems import problems
from services.index_api.static import add_console_routes
from shared.observability.health import CHECKS, Check, add_health_routes


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


def api_app(ctx: ApiContext, checks: dict[str, Check]) -> web.Application:
    app = web.Application(middlewares=[problems, authentication],
                          client_max_size=ctx.settings.api_max_upload_bytes)
    app[CONTEXT] = ctx
    app[CHECKS] = checks
    add_health_routes(app)
    app.router.add_get("/openapi.json", _openapi)
    add_console_routes(app)
    for module in (routes_index, routes_status, routes_commands, routes_objects,
                   routes_config):
        app.router.add_routes(module.routes)
    return app


async def start_api(ctx: ApiContext, checks: dict[str, Check]) -> tuple[web.AppRunner, int]:
    """Serve the API on API_HOST:API_PORT; the runner (``await runner.cleanup()`` stops it)
    and the port (API_PORT=0: one the system chose)."""
    runner = web.AppRunner(api_app(ctx, checks), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, ctx.settings.api_host, ctx.settings.api_port).start()
    address = runner.addresses[0] if runner.addresses else None
    port = int(address[1]) if isinstance(address, tuple) else ctx.settings.api_port
    return runner, port
