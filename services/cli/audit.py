"""``anon audit``: the audit trail of reads and changes of PHI and configuration."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import Settings

NAME = "audit"
HELP = "print the audit trail (who read or changed PHI or configuration), newest first"


def since_value(text: str) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise), or an age such as 30m, 12h
    or 7d."""
    text = text.strip()
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "give an ISO date or date-time (2026-12-01, 2026-12-01T08:00) or an age "
            "(30m, 12h, 7d)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=since_value, metavar="WHEN",
                        help="only records since WHEN: an ISO date or date-time, or 30m, 12h, 7d")
    parser.add_argument("--actor", help="only the records of this token name (or cli:<user>)")
    parser.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    parser.add_argument("--json", action="store_true", help="as JSON lines")
    parser.add_argument("--data-dir", type=Path, help="an embedded system's data folder")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from shared.index import audit
    from shared.index.audit import AuditEvent
    from shared.index.connect import open_index

    if args.limit < 1:
        print("anon audit: --limit must be at least 1", file=sys.stderr)
        return 2

    async def read() -> list[AuditEvent]:
        opened = await open_index(args.data_dir or settings.data_dir, settings.database_url,
                                  max_connections=1)
        try:
            return await audit.read(opened.pool, since=args.since, limit=args.limit,
                                    actor=args.actor)
        finally:
            await opened.close()

    for event in asyncio.run(read()):
        if args.json:
            print(json.dumps(event.public()))
            continue
        detail = " ".join(f"{k}={v}" for k, v in sorted(event.detail.items()))
        print("\t".join([event.at.isoformat(timespec="seconds"), event.actor,
                         event.role or "-", event.client or "-", event.action,
                         event.target or "-", event.outcome,
                         str(event.status) if event.status is not None else "-", detail]))
    return 0
