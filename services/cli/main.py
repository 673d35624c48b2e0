"""``anon``: the operator's command line.

Each command is a module (or class) of ``services.cli`` with ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args, settings)``; this module builds the parser from
them and dispatches. Command modules import the library inside ``run``, so that building
the parser (and ``anon --help``) stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from services.cli import (
    audit,
    deidentify,
    export,
    importing,
    index,
    jobs,
    lookup,
    profile,
    quarantine,
    query,
    retrieve,
    rt_batch,
    serve,
    tokens,
)
from services.cli.backup import Backup, Restore
from services.cli.system import Conformance, Migrate, Redrive, Status

if TYPE_CHECKING:
    from shared.config import Settings


class Command(Protocol):
    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, settings: Settings) -> int: ...


COMMANDS: tuple[object, ...] = (
    deidentify, rt_batch, serve, importing, query, retrieve, export, jobs, Status, lookup, index,
    quarantine, Redrive, Migrate, Backup, Restore, profile, Conformance, tokens, audit,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anon", description="DICOM de-identification for research collections"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        spec: Command = command  # type: ignore[assignment]
        sub = commands.add_parser(spec.NAME, help=spec.HELP)
        spec.add_arguments(sub)
        sub.set_defaults(run=spec.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from shared.config import ConfigurationError, load_settings
    from shared.index.errors import DatabaseUnavailable, SiteConflict
    from shared.observability.logging import quiet_pydicom

    quiet_pydicom()
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"anon: {exc}", file=sys.stderr)
        return 2
    if args.command != "serve":
        from shared.index.embedded import linger_after_exit

        linger_after_exit(settings.embedded_database_linger_seconds)
    run: Callable[[argparse.Namespace, Settings], int] = args.run
    try:
        return run(args, settings)
    except (DatabaseUnavailable, SiteConflict) as exc:
        print(f"anon: {exc}", file=sys.stderr)
        return 3

if __name__ == "__main__":
    sys.exit(main())
