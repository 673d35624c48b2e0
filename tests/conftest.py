"""Shared fixtures: a real PostgreSQL for every test that needs the PHI index.

The server is ``TEST_DATABASE_URL`` if set, else the PostgreSQL on 127.0.0.1:5432 when one
answers, else an embedded server (pgserver) started for the session. Each test gets a
database of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

pytest_plugins = ["tests.s3_server", "tests.messaging_support", "tests.pipeline_support",
                  "tests.orthanc"]

SAMPLES = Path(__file__).parent / "data" / "samples"
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/test"

# Commands the tests run stop their embedded PostgreSQL when they end (a lingering server
# would outlive the test's temporary folder); tests/integration/test_embedded_database.py
# covers lingering.
os.environ.setdefault("EMBEDDED_DATABASE_LINGER_SECONDS", "0")


def pytest_report_header() -> list[str]:
    """What the machine gives the tests, at the head of the run: a full temporary volume, a
    PostgreSQL out of connections or a RabbitMQ that blocks publishers (a resource alarm)
    make many unrelated tests fail or wait, and this says which it was."""
    lines = []
    free = shutil.disk_usage(tempfile.gettempdir()).free
    lines.append(f"free space in {tempfile.gettempdir()}: {free / (1 << 30):.1f} GiB")
    url = os.environ.get("TEST_DATABASE_URL") or LOCAL_SERVER

    async def connections() -> str:
        connection = await asyncpg.connect(url, timeout=3)
        try:
            used = await connection.fetchval("SELECT count(*) FROM pg_stat_activity")
            limit = await connection.fetchval("SHOW max_connections")
        finally:
            await connection.close()
        return f"{used} of {limit}"

    try:
        lines.append(f"PostgreSQL connections in use: {asyncio.run(connections())}")
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        lines.append(f"PostgreSQL does not answer: {type(error).__name__}")
    if shutil.which("rabbitmq-diagnostics"):
        try:
            alarms = subprocess.run(["rabbitmq-diagnostics", "-q", "alarms"],
                                    capture_output=True, text=True, timeout=60, check=False)
            said = " ".join(alarms.stdout.split())
            if alarms.returncode != 0:
                said = f"not read (rabbitmq-diagnostics exited {alarms.returncode})"
            lines.append(f"RabbitMQ: {said}")
        except subprocess.TimeoutExpired:
            lines.append("RabbitMQ: alarms not read in 60 s")
    return lines


def _answers(url: str) -> bool:
    async def probe() -> bool:
        try:
            connection = await asyncpg.connect(url, timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await connection.close()
        return True

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a database on the test server from which test databases are created."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        if not _answers(configured):
            pytest.exit("TEST_DATABASE_URL is set but the server does not answer", 3)
        return configured
    if _answers(LOCAL_SERVER):
        return LOCAL_SERVER
    from shared.index.database import embedded_url

    return embedded_url(tmp_path_factory.mktemp("pg", numbered=False).parent / "pg")


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the test server, dropped afterwards."""
    name = f"anon_test_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(admin_url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(admin_url, name)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_url(admin_url: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    with fresh_database(admin_url) as url:
        yield url


@pytest.fixture
def index_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the command line at the test database."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("SITE_ID", raising=False)
    return database_url
