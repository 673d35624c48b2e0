"""The web console: its page at ``/`` and its files under ``/console/``, without a token.

The console is static (HTML, ES modules, CSS in ``console/`` beside this module, shipped as
package data) and does everything through the API with the token the user signs in with,
so what it shows is exactly what the token's role may see. Only the files of that folder
are served, by name (no paths), each with headers that keep the page to itself: a Content
Security Policy allowing nothing but this origin (and ``blob:`` images, the frames the
console fetched itself), no inline script or style, no framing, no sniffing, no referrer.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from services.index_api.problems import Problem

CONSOLE_PATH = "/console/"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
         ".svg": "image/svg+xml", ".txt": "text/plain"}
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
          "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
          "form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Served again after an upgrade, never from a stale copy.
    "Cache-Control": "no-cache",
}


@functools.cache
def console_files() -> dict[str, tuple[bytes, str]]:
    """Every file of the console by name, with its content type (read once)."""
    folder = resources.files("services.index_api").joinpath("console")
    found: dict[str, tuple[bytes, str]] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in TYPES:
            found[entry.name] = (entry.read_bytes(), TYPES[suffix])
    return found


def _file(name: str) -> web.Response:
    found = console_files().get(name)
    if found is None:
        raise Problem(404, "the console has no such file")
    body, kind = found
    charset = "utf-8" if kind.startswith("text/") or kind.endswith("+xml") else None
    return web.Response(body=body, content_type=kind, charset=charset, headers=HEADERS)


async def _page(request: web.Request) -> web.Response:
    return _file("index.html")


async def _asset(request: web.Request) -> web.Response:
    return _file(request.match_info["name"])


def add_console_routes(app: web.Application) -> None:
    """``/`` (the console's page) and ``/console/{name}`` (its scripts and styles)."""
    app.router.add_get("/", _page)
    app.router.add_get(CONSOLE_PATH + "{name}", _asset)
