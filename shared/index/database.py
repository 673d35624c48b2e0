"""Where the PHI index lives: an external PostgreSQL (``DATABASE_URL``) or an embedded one.

The embedded default runs a private PostgreSQL server (pgserver) in a folder of the data
directory (``shared.index.embedded``); the same SQL and the same asyncpg code run against
both.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

from shared.index.embedded import embedded_url
from shared.index.errors import DatabaseUnavailable

__all__ = ["DatabaseUnavailable", "create_pool", "embedded_url", "resolve_url"]


def resolve_url(data_dir: Path | None, url: str | None = None) -> str:
    """``url`` if given, else ``DATABASE_URL``, else the embedded server of ``data_dir``."""
    url = url or os.environ.get("DATABASE_URL")
    if url:
        return url
    if data_dir is None:
        raise DatabaseUnavailable("set DATABASE_URL or give a data directory")
    return embedded_url(data_dir)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool: nothing. asyncpg rolls back
    a transaction left open either way; its default reset (unlock advisory locks, close
    cursors, unlisten, reset settings) costs a round trip per use, and this code keeps no
    session state: no SET, LISTEN or cursor outside a transaction, and the migrations'
    advisory lock is released where it is taken."""


async def create_pool(url: str, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    """A connection pool; the error names the server, never the credentials."""
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size,
                                         reset=_keep_session)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to the PHI index database: {exc.__class__.__name__}: {exc}"
        ) from exc
    assert pool is not None
    return pool
