"""Opening the PHI index: database, migrations, site identity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg

from shared.index.database import create_pool, resolve_url
from shared.index.migrations import migrate
from shared.index.phi_index import PhiIndex, Site


@dataclass
class OpenIndex:
    url: str
    pool: asyncpg.Pool
    index: PhiIndex
    site: Site

    async def close(self) -> None:
        await self.pool.close()


async def open_index(
    data_dir: Path | None,
    url: str | None = None,
    site_id: str | None = None,
    max_connections: int = 4,
    run_migrations: bool = True,
) -> OpenIndex:
    """Connect, apply pending migrations, and read (or create) the site identity."""
    resolved = resolve_url(data_dir, url)
    pool = await create_pool(resolved, min_size=1, max_size=max_connections)
    try:
        if run_migrations:
            async with pool.acquire() as connection:
                await migrate(connection)
        index = PhiIndex(pool)
        site = await index.site(site_id)
    except BaseException:
        await pool.close()
        raise
    return OpenIndex(resolved, pool, index, site)
