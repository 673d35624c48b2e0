"""Talking to a running system from the command line: its commands, and its jobs.

Commands go to the services by the transport the settings name (RabbitMQ with
``AMQP_URL``, else the ``anon serve`` of the data folder); jobs are read from the index,
where the services write their progress.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.index.jobs import Job

# Exit statuses of the commands that talk to a running system.
REFUSED = 1        # the service answered with an error
UNAVAILABLE = 4    # no service answered
INCOMPLETE = 5     # a followed job ended, but not complete


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path,
                        help="the data folder of a running `anon serve` (default DATA_DIR); "
                             "with AMQP_URL set, commands go to the deployment instead")


def add_data_dir_argument(parser: argparse.ArgumentParser,
                          actions: Sequence[argparse.ArgumentParser] = ()) -> None:
    """``--data-dir`` on a command and on each of its actions, so that it may come before or
    after the action (``anon token --data-dir D list`` and ``anon token list --data-dir D``)."""
    text = "an embedded system's data folder (default DATA_DIR)"
    parser.add_argument("--data-dir", type=Path, help=text)
    for action in actions:
        action.add_argument("--data-dir", type=Path, help=text, default=argparse.SUPPRESS)


def add_follow_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true",
                        help=f"follow the job until it ends; exit 0 only if {what}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def target_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    if getattr(args, "data_dir", None) is not None:
        return settings.model_copy(update={"data_dir": args.data_dir})
    return settings


def call(settings: Settings, service: str, command: str,
         arguments: dict[str, Any]) -> dict[str, Any] | int:
    """The result of a command, or the exit status after printing why there is none."""
    import asyncio

    from shared.commands.client import command_client
    from shared.commands.protocol import CommandFailed, ServiceUnavailable

    try:
        return asyncio.run(command_client(settings).run(service, command, arguments))
    except ServiceUnavailable as exc:
        print(f"anon: {exc}", file=sys.stderr)
        return UNAVAILABLE
    except CommandFailed as exc:
        print(f"anon: {service} refused the command: {exc}", file=sys.stderr)
        return REFUSED


def read_jobs(settings: Settings, ids: list[int] | None = None, limit: int = 50) -> list[Job]:
    import asyncio

    from shared.index import jobs
    from shared.index.connect import open_index

    async def read() -> list[Job]:
        opened = await open_index(settings.data_dir, settings.database_url, max_connections=1)
        try:
            return await jobs.list_jobs(opened.pool, limit=limit, ids=ids)
        finally:
            await opened.close()

    return asyncio.run(read())


def follow(settings: Settings, job_id: int, show_progress: bool = True,
           poll_seconds: float = 0.25) -> int:
    """Follow a job with a progress bar until it ends; 0 only if it ended complete."""
    import asyncio

    from tqdm import tqdm

    from shared.index import jobs
    from shared.index.connect import open_index

    async def watch() -> Job:
        opened = await open_index(settings.data_dir, settings.database_url, max_connections=1)
        bar: tqdm[Any] | None = None
        try:
            while True:
                job = await jobs.get_job(opened.pool, job_id)
                totals = job.totals()
                if bar is None:
                    bar = tqdm(total=totals["items"], unit="item", desc=f"job {job_id}",
                               disable=not show_progress)
                bar.n = totals["items_finished"]
                bar.set_postfix_str(f"{totals['verified']}/{totals['expected']} instances, "
                                    f"{totals['missing']} missing", refresh=False)
                bar.refresh()
                if job.finished:
                    return job
                await asyncio.sleep(poll_seconds)
        finally:
            if bar is not None:
                bar.close()
            await opened.close()

    job = asyncio.run(watch())
    print_job(job, sys.stdout)
    return 0 if job.status == jobs.COMPLETE else INCOMPLETE


def print_job(job: Job, out: Any) -> None:
    """A job and its items as lines for an operator (no PHI)."""
    totals = job.totals()
    print(f"job {job.id} {job.kind}: {job.status} ({totals['items_finished']}/"
          f"{totals['items']} items finished; {totals['verified']}/{totals['expected']} "
          f"instances{'; ' + str(totals['missing']) + ' missing' if totals['missing'] else ''})"
          + (f" - {job.summary}" if job.summary else ""), file=out)
    for item in job.items:
        where = f"line {item.line}" if item.line is not None else f"item {item.position}"
        label = f"{where} ({item.key})" if job.kind == "export" else where
        print(f"  {label}: {item.status}" + (f" - {item.message}" if item.message else ""),
              file=out)
