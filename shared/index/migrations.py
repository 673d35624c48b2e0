"""Applying the plain SQL migrations of ``infra/db/migrations`` (idempotent).

Each file is applied once, in name order, inside a transaction, under an advisory lock
so that several services starting together do not race; applied files are recorded in
``schema_migrations``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import asyncpg

_LOCK_KEY = 0x5EED_1D_01  # advisory lock id used only by migrations


def migrations_dir() -> Path:
    """``MIGRATIONS_DIR`` if set, else ``infra/db/migrations`` of the source tree, else the
    copy an installation from a wheel keeps in ``<prefix>/share/dicom-deid-services``."""
    configured = os.environ.get("MIGRATIONS_DIR")
    if configured:
        return Path(configured)
    source = Path(__file__).resolve().parents[2] / "infra" / "db" / "migrations"
    if source.is_dir():
        return source
    return Path(sys.prefix) / "share" / "dicom-deid-services" / "migrations"


async def migrate(connection: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; returns the names of the files applied now."""
    directory = directory or migrations_dir()
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no migration files in {directory}")
    applied_now: list[str] = []
    # Nothing pending: return without the lock or any DDL, so that a role that may not
    # change the schema (the index API's, infra/db/roles.sql) starts on a migrated index.
    if await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        done = {r["name"] for r in await connection.fetch("SELECT name FROM schema_migrations")}
        if all(path.name in done for path in files):
            return applied_now
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await connection.fetch("SELECT name FROM schema_migrations")}
        for path in files:
            if path.name in done:
                continue
            async with connection.transaction():
                await connection.execute(path.read_text(encoding="utf-8"))
                await connection.execute(
                    "INSERT INTO schema_migrations (name) VALUES ($1)", path.name
                )
            applied_now.append(path.name)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
