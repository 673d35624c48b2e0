"""``anon status``, ``anon migrate``, ``anon redrive`` and ``anon conformance``: a running
system's counts, its index schema, its dead letters and its conformance statement."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shared.messaging.topology import WORK_QUEUES

if TYPE_CHECKING:
    from shared.config import Settings


class Status:
    NAME = "status"
    HELP = "counts of a running system"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", type=Path, help="an embedded system's data folder")
        parser.add_argument("--json", action="store_true", help="as JSON")

    @staticmethod
    def run(args: argparse.Namespace, settings: Settings) -> int:
        import asyncio

        from shared.index.connect import open_index

        async def counts() -> dict[str, int]:
            opened = await open_index(args.data_dir or settings.data_dir,
                                      settings.database_url, max_connections=1)
            try:
                return await opened.index.pipeline_counts()
            finally:
                await opened.close()

        found = asyncio.run(counts())
        if args.json:
            print(json.dumps(found))
        else:
            for name, value in found.items():
                print(f"{name + ':':<14}{value}")
        return 0


class Migrate:
    NAME = "migrate"
    HELP = "create or upgrade the PHI index schema"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", type=Path)

    @staticmethod
    def run(args: argparse.Namespace, settings: Settings) -> int:
        import asyncio

        from shared.index.connect import open_index

        async def migrate() -> None:
            opened = await open_index(args.data_dir or settings.data_dir,
                                      settings.database_url, settings.site_id)
            print(f"PHI index ready; SITEID {opened.site.site_id}")
            await opened.close()

        asyncio.run(migrate())
        return 0


class Redrive:
    NAME = "redrive"
    HELP = "move dead letters back to their queue (RabbitMQ at AMQP_URL)"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "queue", nargs="?", choices=WORK_QUEUES, metavar="QUEUE",
            help=f"only the dead letters of this queue ({', '.join(WORK_QUEUES)})")

    @staticmethod
    def run(args: argparse.Namespace, settings: Settings) -> int:
        import asyncio

        from shared.messaging import BrokerError
        from shared.recovery import RedriveUnavailable, redrive

        try:
            moved, left = asyncio.run(redrive(settings, args.queue))
        except RedriveUnavailable as exc:
            print(f"anon redrive: {exc}", file=sys.stderr)
            return 2
        except BrokerError as exc:
            print(f"anon redrive: {exc}", file=sys.stderr)
            return 3
        print(f"moved {moved} dead letters back to {args.queue or 'their queues'}; "
              f"{left} left in the dead-letter queue")
        return 0


class Conformance:
    NAME = "conformance"
    HELP = "print the Storage SCP's conformance statement"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        pass

    @staticmethod
    def run(args: argparse.Namespace, settings: Settings) -> int:
        from services.scp_ingest.conformance import conformance_statement

        sys.stdout.write(conformance_statement())
        return 0
