"""``anon backup FILE`` and ``anon restore FILE``: the PHI index in one file, and back.

The index is the configured ``DATABASE_URL`` or the embedded server of the data folder,
started as for every other command. What they print are numbers, names and the SITEID,
never a value of the index (``shared.index.backup``). Exit statuses: 1 refused or failed
(the message says why), 3 the database cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.index.backup import IndexSummary, Restored


def _add_common(parser: argparse.ArgumentParser, file_help: str) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help=file_help)
    parser.add_argument("--data-dir", type=Path,
                        help="an embedded system's data folder (default DATA_DIR); "
                             "ignored when DATABASE_URL is set")


def _print_summary(summary: IndexSummary) -> None:
    print(f"SITEID:      {summary.site_id or 'none yet'}")
    print(f"schema:      {summary.migration or 'no migration'}")
    print(f"patients:    {summary.patients}")
    print(f"instances:   {summary.instances}")


class Backup:
    NAME = "backup"
    HELP = "back up the PHI index (pseudonyms, SITEID, secret) to a file, which is PHI"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        _add_common(parser, "the backup to write (pg_dump custom format, mode 0600)")
        parser.add_argument("--force", action="store_true", help="replace an existing FILE")

    @staticmethod
    def run(args: argparse.Namespace, settings: Settings) -> int:
        import asyncio

        from shared.index.backup import (
            BackupError,
            find_tool,
            server_major,
            summarize,
            write_backup,
        )
        from shared.index.database import create_pool, resolve_url

        async def describe(url: str) -> tuple[int, IndexSummary]:
            pool = await create_pool(url, min_size=1, max_size=1)
            try:
                async with pool.acquire() as connection:
                    return await server_major(connection), await summarize(connection)
            finally:
                await pool.close()

        try:
            url = resolve_url(args.data_dir or settings.data_dir, settings.database_url)
            major, summary = asyncio.run(describe(url))
            size = write_backup(find_tool("pg_dump", major), url, args.file, args.force)
        except BackupError as exc:
            print(f"anon backup: {exc}", file=sys.stderr)
            return 1
        print(f"backed up the PHI index to {args.file} ({size} bytes, mode 0600; it is PHI)")
        _print_summary(summary)
        return 0


class Restore:
    NAME = "restore"
    HELP = "restore a backup of the PHI index into an empty database, then migrate it"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        _add_common(parser, "a file anon backup wrote")

    @staticmethod
    def run(args: argparse.Namespace, settings: Settings) -> int:
        import asyncio

        from shared.index.backup import (
            BackupError,
            archive_migrations,
            check_archive_header,
            find_tool,
            load_archive,
            require_empty,
            require_known_migrations,
            server_major,
            upgrade,
            verify_archive,
        )
        from shared.index.database import create_pool, resolve_url

        async def target(url: str) -> int:
            pool = await create_pool(url, min_size=1, max_size=1)
            try:
                async with pool.acquire() as connection:
                    await require_empty(connection)
                    return await server_major(connection)
            finally:
                await pool.close()

        async def upgraded(url: str) -> Restored:
            pool = await create_pool(url, min_size=1, max_size=1)
            try:
                async with pool.acquire() as connection:
                    return await upgrade(connection)
            finally:
                await pool.close()

        try:
            check_archive_header(args.file)
            url = resolve_url(args.data_dir or settings.data_dir, settings.database_url)
            pg_restore = find_tool("pg_restore", asyncio.run(target(url)))
            verify_archive(pg_restore, args.file)
            backed_up = archive_migrations(pg_restore, args.file)
            require_known_migrations(backed_up)
            load_archive(pg_restore, url, args.file)
        except BackupError as exc:
            print(f"anon restore: {exc}", file=sys.stderr)
            return 1
        restored = asyncio.run(upgraded(url))
        print(f"restored the PHI index from {args.file}")
        _print_summary(restored.summary)
        print(f"migrations:  {len(backed_up)} in the backup; applied now: "
              f"{', '.join(restored.applied) or 'none'}")
        site_id = restored.summary.site_id
        if settings.site_id and site_id and settings.site_id != site_id:
            print(f"anon restore: SITE_ID is {settings.site_id} but the restored index is of "
                  f"SITEID {site_id}: set SITE_ID={site_id} or unset it", file=sys.stderr)
        return 0
