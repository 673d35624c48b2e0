"""Pytest plugin: a real S3 server for the session, and stores with buckets of their own.

The server is ``TEST_S3_ENDPOINT`` (with ``TEST_S3_ACCESS_KEY``, ``TEST_S3_SECRET_KEY`` and
optionally ``TEST_S3_SECURE=1``) if set; else a ``minio server`` started in a temporary
folder when the ``minio`` binary is on PATH; else moto's threaded S3 server, embedded in the
test process. Embedded servers can be stopped and restarted on the same port through the
``s3_control`` fixture to test "storage down"; with an external server those tests fail
with an explanation instead of skipping. Load with ``pytest_plugins = ["tests.s3_server"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from minio.error import S3Error

from shared.storage import Buckets, S3Store, StorageUnavailable

MINIO_USER = "anon-test"
MINIO_PASSWORD = "anon-test-secret"
MOTO_KEYS = ("test-access-key", "test-secret-key")  # moto accepts any credentials
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class S3Endpoint:
    """Where the test S3 server listens and how to sign in."""

    endpoint: str
    access_key: str
    secret_key: str
    secure: bool


@dataclass(frozen=True)
class S3StoreFixture:
    """A store on the test server with freshly created buckets of its own."""

    store: S3Store
    buckets: Buckets


_HANDED_OUT: set[int] = set()


def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing holds right now and that this process has not
    handed out before: a port given to a service that has not bound it yet looks free to
    the kernel, which may offer it again (an SCP and its health server once got one). It
    is drawn below the kernel's ephemeral range, where the outgoing connections of
    everything else running (tests in other processes among them) take their ports: a
    port from that range could be taken by one of them before the service binds it."""
    top = _ephemeral_ports_start()
    while True:
        port = random.randrange(20000, top) if top > 21000 else 0
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = probe.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class S3Server:
    """A test S3 server; embedded ones can be stopped and started again."""

    controllable = False
    kind = "external"

    def __init__(self, endpoint: S3Endpoint) -> None:
        self.endpoint = endpoint
        self.running = True

    def _refuse(self) -> None:
        pytest.fail(
            "this test stops and restarts the S3 server, which needs the embedded server; "
            f"unset TEST_S3_ENDPOINT (now {self.endpoint.endpoint}) to run it"
        )

    def start(self) -> None:
        self._refuse()

    def stop(self) -> None:
        self._refuse()

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def ensure_answering(self) -> None:
        """Fail the calling test at once if the server does not answer; an embedded one is
        started again first (a server that died would otherwise cost every later test the
        full wait of each service it starts)."""
        self.ensure_running()
        problem = _answers(self.endpoint)
        if problem and self.controllable:
            self.stop()
            self.start()
            problem = _answers(self.endpoint)
        if problem:
            pytest.fail(f"the test S3 server does not answer ({problem})", pytrace=False)

    def shutdown(self) -> None:
        """End of session: stop an embedded server for good."""


class _MotoServer(S3Server):
    controllable = True
    kind = "moto"

    def __init__(self) -> None:
        port = free_port()
        super().__init__(S3Endpoint(f"127.0.0.1:{port}", *MOTO_KEYS, secure=False))
        self.port = port
        self._server: Any = None
        self.running = False
        self.start()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        if self.running:
            return
        if not _port_is_free(self.port):
            pytest.fail(f"cannot restart the S3 server: port {self.port} is taken")
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.running = True

    def stop(self) -> None:
        if not self.running:
            return
        self._server.stop()  # also closes the listening socket: connections are refused
        self.running = False

    def shutdown(self) -> None:
        self.stop()


class _MinioServer(S3Server):
    controllable = True
    kind = "minio"

    def __init__(self, binary: str, data: Path) -> None:
        port = free_port()
        super().__init__(S3Endpoint(f"127.0.0.1:{port}", MINIO_USER, MINIO_PASSWORD, False))
        self.binary = binary
        self.data = data
        self.port = port
        self.console_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self.running = False
        self.start()

    def start(self) -> None:
        if self.running:
            return
        environment = dict(
            os.environ, MINIO_ROOT_USER=MINIO_USER, MINIO_ROOT_PASSWORD=MINIO_PASSWORD
        )
        command = [
            self.binary,
            "server",
            "--quiet",
            "--address",
            f"127.0.0.1:{self.port}",
            "--console-address",
            f"127.0.0.1:{self.console_port}",
            str(self.data / "objects"),
        ]
        with open(self.data / "minio.log", "ab") as log:
            self._process = subprocess.Popen(
                command, env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT
        url = f"http://127.0.0.1:{self.port}/minio/health/ready"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=1) as answer,
            ):
                if answer.status == 200:
                    self.running = True
                    return
            time.sleep(0.2)
        self._terminate()
        pytest.fail(f"minio server did not start; see {self.data / 'minio.log'}")

    def _terminate(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def stop(self) -> None:
        self._terminate()
        self.running = False

    def shutdown(self) -> None:
        self.stop()


def _external() -> S3Server | None:
    endpoint = os.environ.get("TEST_S3_ENDPOINT")
    if not endpoint:
        return None
    secure = os.environ.get("TEST_S3_SECURE", "").lower() in ("1", "true", "yes")
    return S3Server(
        S3Endpoint(
            endpoint,
            os.environ.get("TEST_S3_ACCESS_KEY", ""),
            os.environ.get("TEST_S3_SECRET_KEY", ""),
            secure or endpoint.startswith("https://"),
        )
    )


def _answers(endpoint: S3Endpoint) -> str | None:
    """None if the server answers, else why not."""

    async def probe() -> None:
        store = S3Store(
            endpoint.endpoint, endpoint.access_key, endpoint.secret_key, endpoint.secure
        )
        try:
            await store.check()
        finally:
            await store.close()

    try:
        asyncio.run(probe())
    except StorageUnavailable as exc:
        return str(exc)
    return None


def _embedded(tmp_path_factory: pytest.TempPathFactory) -> S3Server:
    """A ``minio server`` if the binary is on PATH, else moto's threaded server."""
    binary = shutil.which("minio")
    if binary:
        return _MinioServer(binary, tmp_path_factory.mktemp("minio"))
    return _MotoServer()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The session's S3 server (external, minio binary, or embedded moto)."""
    server = _external()
    if server is not None:
        problem = _answers(server.endpoint)
        if problem:
            pytest.exit(f"TEST_S3_ENDPOINT is set but the server does not answer: {problem}", 3)
    else:
        server = _embedded(tmp_path_factory)
    try:
        yield server
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: S3Server) -> S3Endpoint:
    """Address and credentials of the session's S3 server."""
    return s3_server.endpoint


class S3Control:
    """Stops and restarts the embedded S3 server on the same port (data is kept)."""

    def __init__(self, server: S3Server) -> None:
        self._server = server

    @property
    def kind(self) -> str:
        """``moto``, ``minio`` or ``external``."""
        return self._server.kind

    def stop(self) -> None:
        """Stop the server: new connections are refused until :meth:`start`."""
        self._server.stop()

    def start(self) -> None:
        """Start the server again on the same port."""
        self._server.start()


@pytest.fixture
def s3_control(s3_server: S3Server) -> Iterator[S3Control]:
    """Stop/start the S3 server; fails the test at once if the server is external."""
    if not s3_server.controllable:
        s3_server.stop()  # an external server: fails the test with the explanation
    try:
        yield S3Control(s3_server)
    finally:
        s3_server.ensure_running()


def _remove_buckets(endpoint: S3Endpoint, names: list[str]) -> None:
    host = endpoint.endpoint.split("://", 1)[-1]
    secure = endpoint.secure or endpoint.endpoint.startswith("https://")
    client = Minio(host, endpoint.access_key, endpoint.secret_key, secure=secure)
    for name in names:
        try:
            for item in client.list_objects(name, recursive=True):
                client.remove_object(name, item.object_name)
            client.remove_bucket(name)
        except S3Error as exc:
            if exc.code != "NoSuchBucket":
                raise


@pytest.fixture
def s3_store(s3_server: S3Server) -> Iterator[S3StoreFixture]:
    """A fresh :class:`S3Store` with buckets unique to the test, removed afterwards."""
    endpoint = s3_server.endpoint
    suffix = uuid.uuid4().hex[:8]
    buckets = Buckets(
        incoming=f"in-{suffix}",
        deidentified=f"deid-{suffix}",
        quarantine=f"quar-{suffix}",
        exports=f"exp-{suffix}",
    )
    store = S3Store(endpoint.endpoint, endpoint.access_key, endpoint.secret_key, endpoint.secure)
    asyncio.run(store.ensure_buckets(buckets.all()))
    try:
        yield S3StoreFixture(store, buckets)
    finally:
        asyncio.run(store.close())
        s3_server.ensure_running()
        _remove_buckets(endpoint, buckets.all())
