"""``anon``: the operator's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from services.cli import rt_batch
from services.cli.deidentify_folder import deidentify_files
from shared.batch.files import DEFAULT_EXTENSIONS, ExtensionFilter, collect
from shared.config import ConfigurationError, Settings, load_settings
from shared.deid.ctp_filter import FilterScript, ObjectFilter
from shared.deid.ctp_script import load_script
from shared.deid.lookup import LookupTable
from shared.deid.options import ProfileOptions
from shared.deid.profile import describe_profile
from shared.index.connect import open_index
from shared.index.database import DatabaseUnavailable
from shared.index.phi_index import SiteConflict
from shared.messaging.topology import WORK_QUEUES
from shared.observability.logging import configure_logging, quiet_pydicom

_OPTION_FLAGS = {
    "retain_safe_private": "keep the safe private attributes of Table E.3.10-1",
    "retain_uids": "keep UIDs",
    "retain_device_identity": "keep device identity (serial numbers, station name...)",
    "retain_institution_identity": "keep institution name, address, department",
    "retain_patient_characteristics": "keep age, sex, size, weight... (on by default)",
    "retain_longitudinal_full_dates": "keep dates unchanged",
    "retain_longitudinal_modified_dates": "shift dates by the patient's offset (on by default)",
    "clean_descriptors": "keep descriptions with identifying terms removed",
    "clean_structured_content": "keep SR content with identifying terms removed",
    "clean_graphics": "keep graphics and overlays, text cleaned",
}


def _add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "profile", "PS3.15 Annex E options; the default is RICORD (Basic Profile, "
        "Retain Longitudinal with Modified Dates, Retain Patient Characteristics)"
    )
    group.add_argument(
        "--basic", action="store_true",
        help="start from the Basic Profile alone instead of RICORD, then add options",
    )
    for name, text in _OPTION_FLAGS.items():
        group.add_argument("--" + name.replace("_", "-"), action="store_true", help=text)


def _profile_options(args: argparse.Namespace) -> ProfileOptions:
    chosen = {name: bool(getattr(args, name)) for name in _OPTION_FLAGS}
    base = {} if args.basic else {
        "retain_longitudinal_modified_dates": True, "retain_patient_characteristics": True
    }
    merged = {**base, **{k: v for k, v in chosen.items() if v}}
    if merged.get("retain_longitudinal_full_dates"):
        merged["retain_longitudinal_modified_dates"] = False
    return ProfileOptions(**merged)


def _object_filter(args: argparse.Namespace) -> ObjectFilter:
    """The filter switches and script; an unreadable or invalid script is refused here."""
    script = None
    if args.filter is not None:
        try:
            script = FilterScript.parse(args.filter.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{args.filter}: {exc}") from None
    return ObjectFilter(
        script=script,
        reject_structured_reports=not args.accept_structured_reports,
        reject_secondary_captures=not args.accept_secondary_captures,
        reject_identifying_pixels=not args.accept_burned_in_annotation,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anon", description="DICOM de-identification for research collections"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    deid = commands.add_parser("deidentify", help="de-identify files and folders")
    deid.add_argument("sources", nargs="+", type=Path, metavar="SRC")
    deid.add_argument("--out", required=True, type=Path, help="output folder")
    deid.add_argument("--data-dir", type=Path, help="embedded index, quarantine (default ./data)")
    deid.add_argument("--recursive", "-r", action="store_true", help="descend into folders")
    deid.add_argument(
        "--extensions", default=DEFAULT_EXTENSIONS,
        help="comma-separated suffixes; '*' for all; [dcm] = names of digits and periods",
    )
    deid.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1,
                      help="processes (default: every core)")
    deid.add_argument("--quarantine", type=Path,
                      help="rejected files and their report (default DATA_DIR/quarantine/<time>)")
    deid.add_argument("--no-progress", action="store_true", help="no progress bar")
    scripts = deid.add_argument_group(
        "script", "a CTP DicomAnonymizer script instead of the built-in profile"
    )
    scripts.add_argument("--script", type=Path, metavar="FILE",
                         help="CTP anonymizer script (XML or properties form)")
    scripts.add_argument("--script-dialect", choices=("auto", "ctp", "rsna"), default="auto",
                         help="rules for the script (auto: rsna if it uses @uid, @ptid, "
                         "@acc or @hashdate without parentheses)")
    scripts.add_argument("--lookup-table", type=Path, metavar="FILE",
                         help="lookup table for @lookup (KeyType/value=replacement lines)")
    accept = deid.add_argument_group(
        "filter", "which objects are accepted (as in the RSNA Anonymizer's Filter tab)"
    )
    accept.add_argument("--filter", type=Path, metavar="FILE",
                        help="CTP DicomFilter script; objects it does not match are refused")
    accept.add_argument("--accept-structured-reports", action="store_true",
                        help="do not refuse Structured Reports (refused by default)")
    accept.add_argument("--accept-secondary-captures", action="store_true",
                        help="do not refuse Secondary Captures (ImageType contains SECONDARY)")
    accept.add_argument("--accept-burned-in-annotation", action="store_true",
                        help="de-identify objects marked Burned In Annotation or Recognizable "
                        "Visual Features YES (their pixels are not cleaned; quarantined by "
                        "default); each is recorded as accepted in the index")
    _add_profile_arguments(deid)

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
    _add_profile_arguments(profile)
    return parser


def profile_markdown(options: ProfileOptions) -> str:
    lines = ["| Tag | Attribute | Code | Action |", "|---|---|---|---|"]
    lines += [f"| {t} | {n} | {c} | {d} |" for t, n, c, d in describe_profile(options)]
    return "\n".join(lines) + "\n"


def _run_deidentify(args: argparse.Namespace, settings: Settings) -> int:
    data_dir = args.data_dir or settings.data_dir
    try:
        accept = ExtensionFilter(args.extensions)
        files = collect(args.sources, accept, args.recursive)
        options = _profile_options(args)
        object_filter = _object_filter(args)
        if args.script is not None:
            load_script(args.script, args.script_dialect)  # refuse a bad script before any work
        if args.lookup_table is not None:
            LookupTable.load(args.lookup_table)
    except (ValueError, OSError) as exc:
        print(f"anon deidentify: {exc}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    if any(out.is_relative_to(s.resolve()) for s in args.sources if s.is_dir()):
        print("anon deidentify: --out must not be inside an input folder", file=sys.stderr)
        return 2
    if not files:
        print("anon deidentify: no input files match", file=sys.stderr)
        return 1
    quarantine = args.quarantine or data_dir / "quarantine" / time.strftime("%Y%m%d-%H%M%S")
    summary = deidentify_files(
        files, args.out, quarantine, options, data_dir,
        database_url=settings.database_url, site_id=settings.site_id,
        jobs=max(1, args.jobs), progress=not args.no_progress, object_filter=object_filter,
        script=args.script, script_dialect=args.script_dialect, lookup_table=args.lookup_table,
    )
    print("\n".join(summary.lines()))
    return 0


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
            return _run_deidentify(args, settings)
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
                sys.stdout.write(profile_markdown(_profile_options(args)))
            else:
                for tag, name, code, text in describe_profile(_profile_options(args)):
                    print(f"{tag:<14} {code:<3} {name}: {text}")
            return 0
    except (DatabaseUnavailable, SiteConflict) as exc:
        print(f"anon: {exc}", file=sys.stderr)
        return 3
    return 2


if __name__ == "__main__":
    sys.exit(main())
