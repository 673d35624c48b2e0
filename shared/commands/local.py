"""Commands to ``anon serve`` from the same machine: HTTP on the loopback interface.

``anon serve`` runs every service in one process with in-process queues, which no other
process can reach. It therefore answers commands on ``127.0.0.1`` at a free port, at
``POST /commands/<service>`` with the request as the JSON body, and writes the address
and a random bearer token to ``DATA_DIR/control.json``, readable by its owner only: whoever
may read the data folder (and with it the PHI index) may send commands, nobody else. The
file is removed when the server stops; a file left by a crash names a port where nothing
answers, which the client reports as "not running".
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from shared.commands.protocol import Registry, ServiceUnavailable, failure

CONTROL_FILE = "control.json"
_REGISTRIES: web.AppKey[dict[str, Registry]] = web.AppKey("registries", dict)
_TOKEN: web.AppKey[str] = web.AppKey("token", str)


def control_path(data_dir: Path) -> Path:
    return Path(data_dir) / CONTROL_FILE


async def _command(request: web.Request) -> web.Response:
    supplied = request.headers.get("Authorization", "")
    expected = f"Bearer {request.app[_TOKEN]}"
    if not hmac.compare_digest(supplied.encode(), expected.encode()):
        return web.json_response(failure("Unauthorized", "wrong or missing token"), status=401)
    registry = request.app[_REGISTRIES].get(request.match_info["service"])
    if registry is None:
        return web.json_response(failure("UnknownService", "no such service"), status=404)
    try:
        body: object = await request.json()
    except ValueError:
        return web.json_response(failure("BadRequest", "a command is a JSON object"), status=400)
    return web.json_response(await registry.answer(body), dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class LocalCommandServer:
    """The command endpoint of ``anon serve``."""

    def __init__(self, data_dir: Path, registries: list[Registry]) -> None:
        self.path = control_path(data_dir)
        self.registries = {r.service: r for r in registries}
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        token = secrets.token_urlsafe(32)
        app[_REGISTRIES] = self.registries
        app[_TOKEN] = token
        app.router.add_post("/commands/{service}", _command)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and getattr(server, "sockets", None)
        port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"url": f"http://127.0.0.1:{port}", "token": token, "pid": os.getpid()},
                      handle)
        os.replace(partial, self.path)

    async def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class LocalCommandClient:
    """Sends commands to the ``anon serve`` of a data folder."""

    def __init__(self, data_dir: Path, timeout: float) -> None:
        self.data_dir = Path(data_dir)
        self.timeout = timeout

    def _not_running(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"no anon serve is running on the data folder {self.data_dir}: start it with "
            f"`anon serve --data-dir {self.data_dir}` (or set AMQP_URL for a deployment)")

    async def call(self, service: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            control = json.loads(control_path(self.data_dir).read_text())
            url, token = str(control["url"]), str(control["token"])
        except (OSError, ValueError, KeyError, TypeError):
            raise self._not_running() from None
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                f"{url}/commands/{service}", json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                answer: dict[str, Any] = await response.json(content_type=None)
                return answer
        except aiohttp.ClientConnectionError:
            raise self._not_running() from None
        except TimeoutError:
            raise ServiceUnavailable(
                f"anon serve did not answer within {self.timeout:g} s (COMMAND_TIMEOUT_SECONDS)"
            ) from None
