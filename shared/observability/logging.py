"""Structured JSON logs with a correlation id per object; PHI is never logged.

Log messages are written by our code with identifiers that are not PHI (object keys,
correlation ids, reason codes). pynetdicom's own logging of dataset identifiers (it logs
C-FIND/C-MOVE identifiers and patient names at DEBUG/INFO) is switched off.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

correlation_id: ContextVar[str] = ContextVar("correlation_id", default="")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, correlation id."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = correlation_id.get()
        if current:
            entry["correlation_id"] = current
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    """JSON logs on stderr for ``service``; quiet third-party loggers that could log PHI."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet_pynetdicom()
    quiet_pydicom()
    for noisy in ("aio_pika", "aiormq", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def quiet_pydicom() -> None:
    """Stop pydicom's warnings, which quote values (an unknown Specific Character Set, an
    invalid UID), from reaching the logs or the terminal."""
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


def quiet_pynetdicom() -> None:
    """Stop pynetdicom from logging identifiers (patient names, IDs) of requests."""
    from pynetdicom import _config

    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


@contextmanager
def correlation(value: str) -> Iterator[None]:
    """Log records inside the block carry ``value`` as their correlation id."""
    token = correlation_id.set(value)
    try:
        yield
    finally:
        correlation_id.reset(token)


def log_fields(**fields: object) -> dict[str, dict[str, object]]:
    """``extra=`` for a log call with structured fields (never pass PHI here)."""
    return {"fields": fields}
