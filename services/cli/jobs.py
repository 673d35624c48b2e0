"""``anon jobs``: the retrieve and export jobs with their progress and status."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from services.cli.remote import add_target_arguments

if TYPE_CHECKING:
    from shared.config import Settings

NAME = "jobs"
HELP = "list retrieve and export jobs with progress and status"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", nargs="*", type=int, help="only these job numbers")
    parser.add_argument("--limit", type=int, default=20, help="newest jobs shown (default 20)")
    parser.add_argument("--json", action="store_true", help="as JSON")
    add_target_arguments(parser)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.remote import print_job, read_jobs, target_settings

    found = read_jobs(target_settings(args, settings), ids=args.job or None, limit=args.limit)
    if args.json:
        print(json.dumps([job.public() for job in found], indent=2))
        return 0
    if not found:
        print("no jobs" if not args.job else "no such job", file=sys.stderr if args.job else
              sys.stdout)
        return 1 if args.job else 0
    for job in found:
        print_job(job, sys.stdout)
    return 0
