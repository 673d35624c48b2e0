"""``anon quarantine list|release|purge``: the objects that were refused (they hold PHI)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from services.cli.remote import add_data_dir_argument

if TYPE_CHECKING:
    from shared.config import Settings

NAME = "quarantine"
HELP = "list, release or purge quarantined objects (they hold PHI)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="key, stage, reason code, reason, date")
    listing.add_argument("--json", action="store_true", help="as JSON lines")
    release = actions.add_parser("release", help="send an object back through the pipeline")
    release.add_argument("key", metavar="KEY")
    release.add_argument("--accept-burned-in-annotation", action="store_true",
                         help="accept this object's burned-in annotation knowingly "
                         "(recorded with its instance)")
    purge = actions.add_parser("purge", help="delete quarantined copies and records")
    purge.add_argument("--older-than", type=float, metavar="DAYS",
                       help="only those quarantined more than DAYS days ago")
    add_data_dir_argument(parser, [listing, release, purge])


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from shared import quarantine

    if args.data_dir is not None:
        settings = settings.model_copy(update={"data_dir": args.data_dir})

    async def act() -> int:
        async with quarantine.operator(settings) as system:
            if args.action == "list":
                for entry in await quarantine.list_quarantined(system.index):
                    when = entry.quarantined_at.isoformat(timespec="seconds")
                    if args.json:
                        print(json.dumps({"key": entry.key, "stage": entry.stage,
                                          "reason_code": entry.reason_code,
                                          "reason": entry.reason, "date": when}))
                    else:
                        print(f"{entry.key}\t{entry.stage}\t{entry.reason_code}\t"
                              f"{entry.reason}\t{when}")
                return 0
            if args.action == "release":
                target = await quarantine.release(
                    system.store, system.buckets, system.index, system.broker, args.key,
                    accept_burned_in_annotation=args.accept_burned_in_annotation)
                where = ("announced" if system.broker is not None else
                         "anon serve announces it (within seconds, or when it starts)")
                print(f"released {args.key} as {target}; {where}")
                return 0
            purged = await quarantine.purge(system.store, system.buckets, system.index,
                                            args.older_than)
            folders = quarantine.purge_folders(settings.data_dir, args.older_than)
            print(f"purged {purged} quarantined objects and {folders} quarantine folders "
                  "of anon deidentify")
            return 0

    try:
        return asyncio.run(act())
    except quarantine.NotQuarantined as exc:
        print(f"anon quarantine: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"anon quarantine: {exc}", file=sys.stderr)
        return 2
