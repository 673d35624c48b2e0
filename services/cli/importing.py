"""``anon import``: send local files into a running system."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shared.batch.files import DEFAULT_EXTENSIONS

if TYPE_CHECKING:
    from shared.batch.importing import ImportSummary
    from shared.config import Settings

NAME = "import"
HELP = "send local files into a running system"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", type=Path, metavar="PATH")
    parser.add_argument("--recursive", "-r", action="store_true")
    parser.add_argument("--extensions", default=DEFAULT_EXTENSIONS)
    parser.add_argument("--host", default="127.0.0.1",
                        help="SCP of a running 'anon serve' (without AMQP_URL/S3_ENDPOINT)")
    parser.add_argument("--port", type=int, default=11112)
    parser.add_argument("--aet", default="ANONSCP", help="called AE title")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from services.cli.progress import BarProgress
    from shared.batch.files import ExtensionFilter, collect
    from shared.batch.importing import import_direct
    from shared.dimse.store import send_files

    try:
        files = collect(args.sources, ExtensionFilter(args.extensions), args.recursive)
    except (ValueError, FileNotFoundError) as exc:
        print(f"anon import: {exc}", file=sys.stderr)
        return 2
    if not files:
        print("anon import: no input files match", file=sys.stderr)
        return 1
    try:
        with BarProgress(enabled=not args.no_progress) as progress:
            if settings.amqp_url and settings.s3_endpoint:
                summary = asyncio.run(import_direct(files, settings, progress))
            else:
                summary = send_files(files, args.host, args.port, args.aet, progress)
    except (ConnectionError, ValueError) as exc:
        print(f"anon import: {exc}", file=sys.stderr)
        return 3
    print("\n".join(summary_lines(summary)))
    return 0 if not summary.failed else 1


def summary_lines(summary: ImportSummary) -> list[str]:
    lines = [f"sent:        {summary.sent}", f"quarantined: {summary.quarantined}",
             f"failed:      {len(summary.failed)}"]
    lines += [f"  {path}: {reason}" for path, reason in summary.failed]
    return lines
