"""``anon export``: send de-identified patients to the research destination."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from services.cli.remote import add_follow_arguments, add_target_arguments

if TYPE_CHECKING:
    from shared.config import Settings

NAME = "export"
HELP = "export de-identified patients to the destination (C-STORE), per instance verified"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--patient", nargs="+", metavar="ID",
                       help="pseudonymous patient IDs, e.g. 123456-000001")
    group.add_argument("--all-pending", action="store_true",
                       help="every patient with instances not yet exported")
    parser.add_argument("--force", action="store_true",
                        help="send every instance again, also those the destination has")
    parser.add_argument("--now", action="store_true",
                        help="do not wait for studies to settle (RT set complete, "
                             "EXPORT_QUIET_SECONDS without new objects)")
    add_follow_arguments(parser, "every patient was exported completely")
    add_target_arguments(parser)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.remote import call, follow, target_settings
    from shared.commands.protocol import EXPORTER

    settings = target_settings(args, settings)
    result = call(settings, EXPORTER, "export",
                  {"patients": args.patient or [], "all_pending": args.all_pending,
                   "force": args.force, "settle": not args.now})
    if isinstance(result, int):
        return result
    job = int(result["job"])
    print(f"job {job}: {result['items']} patient{'s' if result['items'] != 1 else ''} to "
          f"export; follow with `anon jobs {job}`")
    if not args.wait:
        return 0
    return follow(settings, job, show_progress=not args.no_progress and sys.stderr.isatty())
