"""The recent warnings and errors of every service, kept in the index for administrators.

Services log JSON lines to stderr, which an administrator may not be able to read (one
container among many, rotated away). :class:`ErrorLog` keeps a copy of every WARNING and
above in the ``service_error`` table (migration 0010), where :func:`recent_errors` reads
them for all services at once.

Logging must never wait for the database: a record goes into a bounded queue in memory
(any thread may log), and a task of the event loop writes the queue about every second
with one INSERT per batch, then prunes the table to its latest :data:`KEEP_ROWS` rows.
When the queue is full or the database is down, records are dropped and counted
(``service_errors_dropped_total``); the stderr log still has them.

What is kept is what the JSON log holds, and less: the formatted message (written by our
code, without PHI), the logger's name, the level, the service, the structured fields of
``extra=log_fields(...)``, and for an exception only its class name. An exception's text
and traceback are never kept, even when the exception is an argument of the message:
they can quote DICOM values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter

from shared.observability.logging import JsonFormatter
from shared.observability.metrics import REGISTRY

KEEP_ROWS = 10_000
QUEUE_SIZE = 1_000
FLUSH_SECONDS = 1.0
BATCH_ROWS = 500
MAX_MESSAGE_CHARS = 2_000
MAX_FIELDS_CHARS = 4_000
STOP_SECONDS = 5.0
WRITE_SECONDS = 10.0

DROPPED = Counter(
    "service_errors_dropped_total",
    "Warnings and errors not kept in the index (queue full or database down)",
    registry=REGISTRY,
)

_INSERT = (
    "INSERT INTO service_error (at, service, level, logger, message, fields)"
    " SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[],"
    " $5::text[], $6::jsonb[])"
)
_PRUNE = (
    "DELETE FROM service_error WHERE id <= (SELECT id FROM service_error"
    " ORDER BY id DESC OFFSET $1 LIMIT 1)"
)

Row = tuple[datetime, str, str, str, str, str]


def _without_exceptions(value: object) -> object:
    """An exception as its class name; anything else as it is."""
    return type(value).__name__ if isinstance(value, BaseException) else value


def _message(record: logging.LogRecord) -> str:
    """The formatted message, every exception among its arguments by class name."""
    msg = _without_exceptions(record.msg)
    args: Any = record.args
    if isinstance(args, tuple):
        args = tuple(_without_exceptions(a) for a in args)
    elif isinstance(args, Mapping):
        args = {k: _without_exceptions(v) for k, v in args.items()}
    text = str(msg)
    if args:
        text = text % args
    return text[:MAX_MESSAGE_CHARS]


def _fields(record: logging.LogRecord) -> str:
    fields: dict[str, object] = {}
    extra = getattr(record, "fields", None)
    if isinstance(extra, dict):
        fields.update(extra)
    if record.exc_info and record.exc_info[0] is not None:
        fields["error"] = record.exc_info[0].__name__
    text = json.dumps(fields, ensure_ascii=False, default=lambda v: type(v).__name__
                      if isinstance(v, BaseException) else str(v))
    if len(text) > MAX_FIELDS_CHARS:
        return json.dumps({"fields_left_out": len(text)})
    return text


class ErrorLog(logging.Handler):
    """Keeps WARNING and above of this process in ``service_error`` (see the module
    documentation). :meth:`start` it on the event loop with a pool; :meth:`stop` writes
    what is queued (waiting at most ``STOP_SECONDS``) and detaches it."""

    def __init__(self, service: str, capacity: int = QUEUE_SIZE) -> None:
        super().__init__(logging.WARNING)
        self.service = service
        self.capacity = capacity
        self.dropped = 0
        self._queue: deque[Row] = deque()
        self._guard = threading.Lock()
        self._pool: asyncpg.Pool | None = None
        self._task: asyncio.Task[None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            row = (datetime.fromtimestamp(record.created, UTC), self.service,
                   record.levelname.lower(), record.name, _message(record), _fields(record))
        except Exception:
            self._drop(1)
            return
        with self._guard:
            if len(self._queue) >= self.capacity:
                full = True
            else:
                self._queue.append(row)
                full = False
        if full:
            self._drop(1)

    def _drop(self, count: int) -> None:
        with self._guard:
            self.dropped += count
        DROPPED.inc(count)

    def _take(self, limit: int) -> list[Row]:
        with self._guard:
            return [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def write(self) -> int:
        """Write what is queued, one INSERT per batch, then prune; the rows written. A
        batch the database refuses is dropped (and counted)."""
        if self._pool is None:
            return 0
        written = 0
        while batch := self._take(BATCH_ROWS):
            columns = [list(column) for column in zip(*batch, strict=True)]
            try:
                async with asyncio.timeout(WRITE_SECONDS), self._pool.acquire() as connection:
                    await connection.execute(_INSERT, *columns)
            except asyncio.CancelledError:
                self._drop(len(batch))
                raise
            except Exception:  # the database is down: the rest waits for the next flush
                self._drop(len(batch))
                return written
            written += len(batch)
        if written:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(WRITE_SECONDS), self._pool.acquire() as connection:
                    await connection.execute(_PRUNE, KEEP_ROWS)
        return written

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.write()

    def start(self, pool: asyncpg.Pool, logger: logging.Logger | None = None) -> None:
        """Attach to ``logger`` (the root logger) and flush to ``pool`` every second."""
        self._pool = pool
        (logger or logging.getLogger()).addHandler(self)
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name="error-log-flush")

    async def stop(self, logger: logging.Logger | None = None) -> None:
        """Detach, stop the task, and write what is queued (at most ``STOP_SECONDS``)."""
        (logger or logging.getLogger()).removeHandler(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_SECONDS):
                await self.write()
        left = self._take(self.capacity)
        if left:
            self._drop(len(left))
        self._pool = None


def logging_service() -> str | None:
    """The service name of this process's JSON logs (``configure_logging``), or None
    when it does not log as a service (a command, a test)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return handler.formatter.service
    return None


def installed() -> ErrorLog | None:
    """The error log attached to the root logger, if any."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ErrorLog):
            return handler
    return None


async def recent_errors(
    pool: asyncpg.Pool | asyncpg.Connection, limit: int = 100, since: datetime | None = None,
    service: str | None = None,
) -> list[dict[str, Any]]:
    """The newest kept warnings and errors first (from ``since``, of one ``service``):
    ``id``, ``at``, ``service``, ``level``, ``logger``, ``message``, ``fields``."""
    rows = await pool.fetch(
        "SELECT id, at, service, level, logger, message, fields FROM service_error"
        " WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::text IS NULL OR service = $2)"
        " ORDER BY id DESC LIMIT $3", since, service, limit)
    return [{"id": r["id"], "at": r["at"], "service": r["service"], "level": r["level"],
             "logger": r["logger"], "message": r["message"], "fields": json.loads(r["fields"])}
            for r in rows]
