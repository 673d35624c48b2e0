"""Warnings and errors kept in the index: what is kept of a record (never an exception's
text), logging never waits for the database, the table keeps its latest rows, and a
process logging as a service keeps its warnings from the moment its resources open."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from shared.config import load_settings
from shared.index.connect import open_index
from shared.observability import error_log
from shared.observability.error_log import ErrorLog, recent_errors
from shared.observability.logging import JsonFormatter, log_fields
from shared.runtime import open_resources
from tests.messaging_support import wait_until
from tests.s3_server import free_port

pytestmark = pytest.mark.integration

VALUE = "Smith^John 1234567"  # stands for a DICOM value an exception could quote


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of its own, so the test's records reach only the handler under test."""
    named = logging.getLogger(f"error-log-test-{time.monotonic_ns()}")
    named.propagate = False
    named.setLevel(logging.DEBUG)
    yield named
    named.handlers.clear()


def test_warnings_are_kept_with_their_fields_and_exceptions_by_class_only(
    database_url: str, logger: logging.Logger
) -> None:
    async def scenario() -> None:
        opened = await open_index(None, database_url, max_connections=2)
        handler = ErrorLog("test-service")
        handler.start(opened.pool, logger)
        try:
            logger.info("not kept")
            logger.warning("message refused", extra=log_fields(delivery=2, key="ab12"))
            try:
                raise ValueError(f"cannot read {VALUE}")
            except ValueError as exc:
                logger.error("object not read", exc_info=True)
                logger.error("object not read: %s", exc)
                logger.warning("with a field", extra=log_fields(error=exc))
            worker = threading.Thread(target=logger.critical, args=("from a thread",))
            worker.start()
            worker.join()

            async def kept() -> bool:
                return len(await recent_errors(opened.pool)) == 5

            await wait_until(kept, 5, "the records to be written by the flush task")
            rows = await recent_errors(opened.pool, service="test-service")
        finally:
            await handler.stop(logger)
            await opened.close()
        assert [(r["level"], r["message"], r["fields"]) for r in reversed(rows)] == [
            ("warning", "message refused", {"delivery": 2, "key": "ab12"}),
            ("error", "object not read", {"error": "ValueError"}),
            ("error", "object not read: ValueError", {}),
            ("warning", "with a field", {"error": "ValueError"}),
            ("critical", "from a thread", {}),
        ]
        assert {r["logger"] for r in rows} == {logger.name}
        assert {r["service"] for r in rows} == {"test-service"}
        assert all(abs(r["at"] - datetime.now(UTC)) < timedelta(minutes=1) for r in rows)
        assert "Smith" not in repr(rows) and "1234567" not in repr(rows)

    asyncio.run(scenario())


@pytest.mark.parametrize("outage", ["closed", "unreachable"])
def test_logging_never_waits_for_a_database_that_is_gone(
    database_url: str, logger: logging.Logger, outage: str
) -> None:
    async def scenario() -> None:
        if outage == "closed":
            opened = await open_index(None, database_url, max_connections=2)
            pool = opened.pool
            await opened.close()
        else:  # nothing listens there: every connection is refused
            pool = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                                             min_size=0, max_size=1)
        handler = ErrorLog("test-service", capacity=100)
        handler.start(pool, logger)
        started = time.perf_counter()
        for n in range(2_000):
            logger.warning("warning %d", n)
        assert time.perf_counter() - started < 1.0
        assert handler.queued == 100 and handler.dropped == 1_900
        await asyncio.sleep(error_log.FLUSH_SECONDS + 0.5)  # a flush fails, nothing raises
        logger.error("still logging")
        started = time.perf_counter()
        await handler.stop(logger)
        assert time.perf_counter() - started < error_log.STOP_SECONDS + 1
        assert handler.queued == 0 and handler.dropped == 2_001
        if outage == "unreachable":
            await pool.close()

    asyncio.run(scenario())


def test_the_table_keeps_the_latest_rows(database_url: str, logger: logging.Logger) -> None:
    async def scenario() -> None:
        opened = await open_index(None, database_url, max_connections=2)
        handler = ErrorLog("pruning")
        handler.start(opened.pool, logger)
        try:
            async with opened.pool.acquire() as connection:
                await connection.execute(
                    "INSERT INTO service_error (at, service, level, logger, message)"
                    " SELECT now(), 'old', 'warning', 'x', 'old ' || n"
                    " FROM generate_series(1, 10050) AS n")
            logger.warning("the newest")
            assert await handler.write() == 1
            async with opened.pool.acquire() as connection:
                count = await connection.fetchval("SELECT count(*) FROM service_error")
                oldest = await connection.fetchval(
                    "SELECT message FROM service_error ORDER BY id LIMIT 1")
            assert (count, oldest) == (error_log.KEEP_ROWS, "old 52")
            assert [r["message"] for r in await recent_errors(opened.pool, limit=2)] == [
                "the newest", "old 10050"]
            assert [r["message"] for r in await recent_errors(opened.pool,
                                                              service="pruning")] == [
                "the newest"]
            later = datetime.now(UTC) + timedelta(hours=1)
            assert await recent_errors(opened.pool, since=later) == []
        finally:
            await handler.stop(logger)
            await opened.close()

    asyncio.run(scenario())


def test_a_process_logging_as_a_service_keeps_its_warnings_while_open(
    database_url: str, tmp_path: Path
) -> None:
    settings = load_settings(database_url=database_url, data_dir=tmp_path / "data",
                             amqp_url=None, s3_endpoint=None)
    root = logging.getLogger()
    service_log = logging.StreamHandler(io.StringIO())
    service_log.setFormatter(JsonFormatter("some-service"))

    async def scenario() -> None:
        plain = await open_resources(settings)  # a command or a test: nothing is kept
        assert plain.error_log is None
        await plain.close()
        root.addHandler(service_log)
        try:
            resources = await open_resources(settings)
        finally:
            root.removeHandler(service_log)
        try:
            assert resources.error_log is not None and resources.error_log in root.handlers
            logging.getLogger("shared.example").warning("queue paused",
                                                        extra=log_fields(queue="anonymize"))
        finally:
            await resources.close()  # writes what is queued, then detaches
        assert resources.error_log not in root.handlers
        opened = await open_index(None, database_url, max_connections=1)
        try:
            rows = await recent_errors(opened.pool, service="some-service")
        finally:
            await opened.close()
        assert [(r["logger"], r["message"], r["fields"]) for r in rows] == [
            ("shared.example", "queue paused", {"queue": "anonymize"})]

    asyncio.run(scenario())
