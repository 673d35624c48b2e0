"""Where the PHI index lives: an external PostgreSQL (``DATABASE_URL``) or an embedded one.

The embedded default runs a private PostgreSQL server (pgserver) in a folder of the data
directory; the same SQL and the same asyncpg code run against both.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import asyncpg

# pgserver asks platformdirs for a runtime folder it does not use here; on servers without
# XDG_RUNTIME_DIR that warns at every start and stop.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


class DatabaseUnavailable(Exception):
    """The PHI index database cannot be reached or started."""


def embedded_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``data_dir/postgres``; returns its URL.

    The server is stopped when the last process that started it exits.
    """
    import pgserver

    folder = (data_dir / "postgres").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # PostgreSQL keeps its socket in this folder; sockets paths are limited to ~107 bytes.
    if len(str(folder)) > 90:
        raise DatabaseUnavailable(
            f"the data directory path is too long for the embedded PostgreSQL socket "
            f"({len(str(folder))} characters); use a shorter --data-dir or set DATABASE_URL"
        )
    try:
        server = pgserver.get_server(folder)  # type: ignore[attr-defined]
    except Exception as exc:
        raise DatabaseUnavailable(f"the embedded PostgreSQL did not start: {exc}") from exc
    return str(server.get_uri())


def resolve_url(data_dir: Path | None, url: str | None = None) -> str:
    """``url`` if given, else ``DATABASE_URL``, else the embedded server of ``data_dir``."""
    url = url or os.environ.get("DATABASE_URL")
    if url:
        return url
    if data_dir is None:
        raise DatabaseUnavailable("set DATABASE_URL or give a data directory")
    return embedded_url(data_dir)


async def create_pool(url: str, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    """A connection pool; the error names the server, never the credentials."""
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to the PHI index database: {exc.__class__.__name__}: {exc}"
        ) from exc
    assert pool is not None
    return pool
