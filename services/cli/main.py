"""``anon``: the operator's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from services.cli import deidentify, rt_batch
from services.cli.options import add_profile_arguments, profile_options
from shared.batch.files import DEFAULT_EXTENSIONS, ExtensionFilter, collect
from shared.config import ConfigurationError, Settings, load_settings
from shared.deid.options import ProfileOptions
from shared.deid.profile import describe_profile
from shared.index.connect import open_index
from shared.index.database import DatabaseUnavailable
from shared.index.phi_index import SiteConflict
from shared.messaging.topology import WORK_QUEUES
from shared.observability.logging import configure_logging, quiet_pydicom


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anon", description="DICOM de-identification for research collections"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    deidentify.add_arguments(
        commands.add_parser("deidentify", help="de-identify files and folders"))

    serve = commands.add_parser(
        "serve", help="run the whole system in one process (Storage SCP and workers)")
    serve.add_argument("--data-dir", type=Path, help="embedded index and objects (./data)")
    serve.add_argument("--port", type=int, help="Storage SCP port (SCP_PORT, 11112)")
    serve.add_argument("--aet", help="Storage SCP AE title (SCP_AE_TITLE, ANONSCP)")
    serve.add_argument("--health-port", type=int, help="health/metrics port (HEALTH_PORT)")

    importer = commands.add_parser("import", help="send local files into a running system")
    importer.add_argument("sources", nargs="+", type=Path, metavar="PATH")
    importer.add_argument("--recursive", "-r", action="store_true")
    importer.add_argument("--extensions", default=DEFAULT_EXTENSIONS)
    importer.add_argument("--host", default="127.0.0.1",
                          help="SCP of a running 'anon serve' (without AMQP_URL/S3_ENDPOINT)")
    importer.add_argument("--port", type=int, default=11112)
    importer.add_argument("--aet", default="ANONSCP", help="called AE title")
    importer.add_argument("--no-progress", action="store_true")

    status = commands.add_parser("status", help="counts of a running system")
    status.add_argument("--data-dir", type=Path, help="an embedded system's data folder")
    status.add_argument("--json", action="store_true", help="as JSON")

    rt_batch.add_arguments(commands.add_parser(
        "rt-batch", help="de-identify RT planning sets (CT, RTSTRUCT, RTPLAN, RTDOSE)"))

    commands.add_parser("conformance", help="print the Storage SCP's conformance statement")

    quarantine = commands.add_parser(
        "quarantine", help="list, release or purge quarantined objects (they hold PHI)")
    quarantine.add_argument("--data-dir", type=Path, help="an embedded system's data folder")
    actions = quarantine.add_subparsers(dest="action", required=True)
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

    redrive = commands.add_parser(
        "redrive", help="move dead letters back to their queue (RabbitMQ at AMQP_URL)")
    redrive.add_argument("queue", nargs="?", choices=WORK_QUEUES, metavar="QUEUE",
                         help=f"only the dead letters of this queue ({', '.join(WORK_QUEUES)})")

    migrate = commands.add_parser("migrate", help="create or upgrade the PHI index schema")
    migrate.add_argument("--data-dir", type=Path)

    profile = commands.add_parser("profile", help="print what the profile does to each element")
    profile.add_argument("--markdown", action="store_true", help="as a Markdown table")
    add_profile_arguments(profile)
    return parser


def profile_markdown(options: ProfileOptions) -> str:
    lines = ["| Tag | Attribute | Code | Action |", "|---|---|---|---|"]
    lines += [f"| {t} | {n} | {c} | {d} |" for t, n, c, d in describe_profile(options)]
    return "\n".join(lines) + "\n"


def _run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.serve import serve

    updates = {k: v for k, v in {"data_dir": args.data_dir, "scp_port": args.port,
                                 "scp_ae_title": args.aet,
                                 "health_port": args.health_port}.items() if v is not None}
    configure_logging("anon-serve", settings.log_level)
    asyncio.run(serve(settings.model_copy(update=updates)))
    return 0


def _run_import(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.importer import import_cstore, import_direct

    try:
        files = collect(args.sources, ExtensionFilter(args.extensions), args.recursive)
    except (ValueError, FileNotFoundError) as exc:
        print(f"anon import: {exc}", file=sys.stderr)
        return 2
    if not files:
        print("anon import: no input files match", file=sys.stderr)
        return 1
    progress = not args.no_progress
    try:
        if settings.amqp_url and settings.s3_endpoint:
            summary = asyncio.run(import_direct(files, settings, progress))
        else:
            summary = import_cstore(files, args.host, args.port, args.aet, progress)
    except (ConnectionError, ValueError) as exc:
        print(f"anon import: {exc}", file=sys.stderr)
        return 3
    print("\n".join(summary.lines()))
    return 0 if not summary.failed else 1


def _run_status(args: argparse.Namespace, settings: Settings) -> int:
    async def counts() -> dict[str, int]:
        opened = await open_index(args.data_dir or settings.data_dir, settings.database_url,
                                  max_connections=1)
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


def _run_quarantine(args: argparse.Namespace, settings: Settings) -> int:
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


def _run_redrive(args: argparse.Namespace, settings: Settings) -> int:
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


async def _migrate(data_dir: Path, settings: Settings) -> None:
    opened = await open_index(data_dir, settings.database_url, settings.site_id)
    print(f"PHI index ready; SITEID {opened.site.site_id}")
    await opened.close()


def main(argv: Sequence[str] | None = None) -> int:
    quiet_pydicom()
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"anon: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "deidentify":
            return deidentify.run(args, settings)
        if args.command == "serve":
            return _run_serve(args, settings)
        if args.command == "import":
            return _run_import(args, settings)
        if args.command == "status":
            return _run_status(args, settings)
        if args.command == "rt-batch":
            return rt_batch.run(args, settings)
        if args.command == "quarantine":
            return _run_quarantine(args, settings)
        if args.command == "redrive":
            return _run_redrive(args, settings)
        if args.command == "conformance":
            from services.scp_ingest.conformance import conformance_statement

            sys.stdout.write(conformance_statement())
            return 0
        if args.command == "migrate":
            asyncio.run(_migrate(args.data_dir or settings.data_dir, settings))
            return 0
        if args.command == "profile":
            if args.markdown:
                sys.stdout.write(profile_markdown(profile_options(args)))
            else:
                for tag, name, code, text in describe_profile(profile_options(args)):
                    print(f"{tag:<14} {code:<3} {name}: {text}")
            return 0
    except (DatabaseUnavailable, SiteConflict) as exc:
        print(f"anon: {exc}", file=sys.stderr)
        return 3
    return 2


if __name__ == "__main__":
    sys.exit(main())
