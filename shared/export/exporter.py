"""Exporting de-identified patients to the research destination: requests become jobs with
one item per patient, and each item is worked by one message of the export queue.

An item sends every stored object of its patient not yet sent to the destination (with
``force``: every one again), once the patient's studies are settled (RT set complete, no
object arrived for ``EXPORT_QUIET_SECONDS``; else the item waits and the sweep announces it
again). Temporary failures of the destination are retried inside the item with a growing
delay, resuming with what is still unsent; permanent refusals are recorded per instance
with their reason, and the item ends failed once everything else was sent. The patient's
export date is set when every one of its objects is accepted. A message carries only the
job and the item's position; handling it again changes nothing once the item is finished,
and resumes a running one. Messages, logs and metrics name pseudonymous patient IDs,
AE titles, hosts, SOP classes and status codes, never PHI.

An administrator switches export off and on while it runs (the ``export_enabled``
switch of :mod:`shared.index.configuration`, read at most every
``CONFIG_REFRESH_SECONDS``; ``EXPORT_ENABLED`` until it is first switched). Switched off,
requests are refused and the items of earlier requests wait, unsent, and are not swept;
switched on again, the sweep announces them and they go on. An item already sending
finishes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from shared.config import Settings
from shared.export import records
from shared.export.destination import (
    Destination,
    ExportDisabled,
    ExportError,
    NothingToExport,
    destination_or_refuse,
)
from shared.export.records import Plan
from shared.export.transfer import Progress, Transfer
from shared.index import configuration, jobs
from shared.index.configuration import RuntimeSetting
from shared.messaging import Message
from shared.messaging.topology import EXPORT
from shared.observability.logging import correlation, log_fields
from shared.observability.metrics import EXPORT_PATIENTS, EXPORT_SECONDS
from shared.runtime import Resources

log = logging.getLogger(__name__)

ItemKey = tuple[int, int]


class Exporter:
    """Export requests, the export queue's handler and the sweep of waiting items."""

    def __init__(self, settings: Settings, resources: Resources) -> None:
        self.settings = settings
        self.resources = resources
        self.pool = resources.index.pool
        quiet = settings.export_quiet_seconds
        # How long a waiting item rests before it is looked at again (unless its quiet
        # period ends sooner).
        self.recheck_seconds = max(0.5, min(quiet, 10.0)) if quiet > 0 else 10.0
        self._due: dict[ItemKey, float] = {}
        # The export switch of the index, read at most this often.
        self.switch_seconds = configuration.CONFIG_REFRESH_SECONDS
        self._switch: tuple[float, RuntimeSetting | None] | None = None

    @property
    def destination(self) -> Destination | None:
        """The configured destination (None while EXPORT_HOST is unset)."""
        return Destination.from_settings(self.settings)

    async def switch(self) -> RuntimeSetting | None:
        """The export switch as last changed in the index (None: never switched), read
        again once it is ``switch_seconds`` old."""
        now = asyncio.get_running_loop().time()
        if self._switch is None or now - self._switch[0] >= self.switch_seconds:
            self._switch = (now, await configuration.runtime_setting(
                self.pool, configuration.EXPORT_ENABLED))
        return self._switch[1]

    async def enabled(self) -> bool:
        """Whether export is switched on: the index's switch, else ``EXPORT_ENABLED``."""
        setting = await self.switch()
        return self.settings.export_enabled if setting is None else setting.value is True

    async def usable_destination(self) -> Destination:
        """The destination, unless export is switched off (ExportDisabled) or none is
        configured (ExportNotConfigured)."""
        setting = await self.switch()
        if setting is None:
            return destination_or_refuse(self.settings)
        if setting.value is not True:
            at = setting.changed_at.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
            raise ExportDisabled(f"export is switched off (by {setting.changed_by}, {at})")
        # Switched on in the index: EXPORT_ENABLED=false no longer applies.
        return destination_or_refuse(self.settings.model_copy(update={"export_enabled": True}))

    # -- requests ----------------------------------------------------------------------

    async def request(
        self,
        patients: Sequence[str] = (),
        *,
        all_pending: bool = False,
        force: bool = False,
        settle: bool = True,
    ) -> int:
        """Create an export job for ``patients`` (pseudonymous patient IDs) and, with
        ``all_pending``, every patient with an object not yet sent; announce its items;
        the job's number. ``force`` sends what was sent before again (with
        ``all_pending``: every patient with a stored object); ``settle=False``
        does not wait for studies to settle. A patient the index does not know gets an
        item failed at once. Raises ExportDisabled, ExportNotConfigured, NothingToExport
        (every patient asked for is exported), or ExportError (nothing asked for)."""
        where = (await self.usable_destination()).describe()
        wanted: dict[str, int] = {}
        for line, key in enumerate((p.strip() for p in patients), start=1):
            if key:
                wanted.setdefault(key, line)
        if not wanted and not all_pending:
            raise ExportError("name the patients to export (pseudonymous patient IDs), or ask "
                              "for every patient not yet exported")
        known = await records.known_patients(self.pool, list(wanted))
        items: list[jobs.NewItem] = []
        for key, line in wanted.items():
            if key in known:
                items.append(jobs.NewItem(key, line))
            elif records.looks_pseudonymous(key):
                items.append(jobs.NewItem(key, line, status=jobs.FAILED,
                                          message="no such patient"))
            else:  # perhaps an original patient ID typed by mistake: not kept
                items.append(jobs.NewItem("", line, status=jobs.FAILED,
                                          message="no such patient (not a pseudonymous "
                                          "patient ID; the entry is not kept)"))
        if all_pending:
            pending = [p for p in await records.pending_patients(self.pool, where, force)
                       if p not in wanted]
            if not pending and not wanted:
                raise NothingToExport("every patient is exported" if not force
                                      else "no patient has de-identified objects")
            items.extend(jobs.NewItem(p) for p in pending)
        parameters: dict[str, Any] = {
            "patients": [i.key for i in items if i.status == jobs.PENDING],
            "all_pending": all_pending, "force": force, "settle": settle,
            "destination": where,
        }
        job = await jobs.create_job(self.pool, jobs.EXPORT, parameters, items)
        for position, new in enumerate(items, start=1):
            if new.status == jobs.PENDING:
                await self._announce(job, position)
        log.info("export requested", extra=log_fields(
            job=job, items=len(items), destination=where, force=force, settle=settle))
        return job

    async def _announce(self, job: int, position: int) -> None:
        await self.resources.broker.publish(EXPORT, {"job": job, "position": position},
                                            correlation_id=f"export-{job}-{position}")

    # -- the export queue --------------------------------------------------------------

    async def handle(self, message: Message) -> None:
        """Work the item a message names (see the module documentation)."""
        try:
            job_id, position = int(message.body["job"]), int(message.body["position"])
        except (KeyError, TypeError, ValueError):
            log.warning("export message refused: it names no job and position")
            return
        with correlation(message.correlation_id):
            try:
                item = await jobs.item(self.pool, job_id, position)
            except jobs.JobNotFound:
                log.warning("export message for an item that does not exist",
                            extra=log_fields(job=job_id, position=position))
                return
            if item.finished:
                return
            try:
                destination = await self.usable_destination()
            except ExportDisabled as exc:
                # Switched off: the item waits, and the sweep announces it once switched on.
                await jobs.update_item(self.pool, job_id, position, status=jobs.WAITING,
                                       message=f"{exc}; waits until export is switched on")
                log.info("export waits: switched off",
                         extra=log_fields(job=job_id, position=position))
                return
            except ExportError as exc:
                await jobs.update_item(self.pool, job_id, position, status=jobs.FAILED,
                                       message=str(exc))
                return
            async with records.patient_lock(self.pool, item.key, destination.describe()):
                item = await jobs.item(self.pool, job_id, position)
                if not item.finished:
                    await self._work(item, destination)

    async def _work(self, item: jobs.Item, destination: Destination) -> None:
        where = destination.describe()
        parameters = await jobs.parameters(self.pool, item.job)
        force = parameters.get("force") is True
        plan = await records.plan(self.pool, item.key, where, item.job, force)
        if not plan.to_send:
            await self._nothing_to_send(item, where, plan)
            return
        if parameters.get("settle") is not False and item.status != jobs.RUNNING:
            unsettled = await records.unsettled(self.pool, item.key,
                                                list({p.study for p in plan.to_send}),
                                                self.settings.export_quiet_seconds)
            if unsettled is not None:
                wait = (unsettled.recheck_seconds or self.recheck_seconds) + 0.1
                self._due[(item.job, item.position)] = asyncio.get_running_loop().time() + wait
                await jobs.update_item(self.pool, item.job, item.position, status=jobs.WAITING,
                                       message=unsettled.message())
                log.info("export waits for studies to settle", extra=log_fields(
                    job=item.job, position=item.position, patient=item.key))
                return
        self._due.pop((item.job, item.position), None)
        started = time.perf_counter()
        progress = Progress(plan.already + len(plan.to_send), plan.already)
        await progress.save(self.pool, item, status=jobs.RUNNING,
                            message=f"sending {len(plan.to_send)} instances to {where}")
        transfer = Transfer(self.pool, self.resources.store, self.resources.buckets.deidentified,
                            destination, item, progress)
        status, message = await self._send(transfer, plan)
        await records.mark_exported(self.pool, item.key, where, sent_now=bool(progress.accepted))
        await progress.save(self.pool, item, status=status, message=message)
        seconds = time.perf_counter() - started
        EXPORT_PATIENTS.labels(outcome=status).inc()
        EXPORT_SECONDS.observe(seconds)
        log.info("export finished", extra=log_fields(
            job=item.job, position=item.position, patient=item.key, status=status,
            sent=len(progress.accepted), failed=len(progress.failed),
            associations=transfer.associations, seconds=round(seconds, 3)))

    async def _nothing_to_send(self, item: jobs.Item, where: str, plan: Plan) -> None:
        await records.mark_exported(self.pool, item.key, where, sent_now=False)
        if not plan.total:
            message = "no de-identified objects of this patient"
        elif plan.already:
            message = f"{plan.already} instances sent to {where}"
        else:
            message = f"nothing new to send: all {plan.total} instances are at {where}"
        await jobs.update_item(self.pool, item.job, item.position, status=jobs.COMPLETE,
                               message=message, expected=plan.already, verified=plan.already)
        EXPORT_PATIENTS.labels(outcome=jobs.COMPLETE).inc()

    async def _send(self, transfer: Transfer, plan: Plan) -> tuple[str, str]:
        """Rounds until everything is handled, the association is refused for good, or
        the retries of a temporary failure are used up; the item's status and message.
        The retries count failures in a row: a round that got objects through resets
        them."""
        item, progress, where = transfer.item, transfer.progress, transfer.where
        retries, base = self.settings.export_retries, self.settings.export_retry_delay_seconds
        remaining = list(plan.to_send)
        attempts, in_a_row = item.counts["attempts"], 0
        while True:
            attempts += 1
            await jobs.update_item(self.pool, item.job, item.position, attempts=attempts)
            before = progress.verified
            end = await transfer.round(remaining)
            remaining = [p for p in remaining if not progress.handled(p.id)]
            if end.permanent is not None:
                await transfer.fail(remaining, end.permanent)
                return jobs.FAILED, f"{end.permanent}; {self._counts(progress)}"
            if end.temporary is None or not remaining:
                break
            if progress.verified > before:
                in_a_row = 0
            if in_a_row >= retries:
                await transfer.fail(remaining, f"not sent: {end.temporary}")
                return jobs.FAILED, (
                    f"destination unavailable: {end.temporary}; gave up after {retries} "
                    f"retries; {progress.verified} of {progress.expected} sent; export the "
                    f"patient again to send the rest")
            delay = base * 2 ** in_a_row
            in_a_row += 1
            await jobs.update_item(self.pool, item.job, item.position, message=(
                f"{end.temporary}; {progress.verified} of {progress.expected} sent; retry "
                f"{in_a_row} of {retries} in {delay:g} s"))
            log.warning("export interrupted, retrying", extra=log_fields(
                job=item.job, position=item.position, patient=item.key, retry=in_a_row,
                delay=delay, sent=progress.verified))
            await asyncio.sleep(delay)
        if progress.failed:
            return jobs.FAILED, self._counts(progress)
        warned = f" ({len(progress.warned)} with warnings)" if progress.warned else ""
        return jobs.COMPLETE, f"{progress.verified} instances sent to {where}{warned}"

    @staticmethod
    def _counts(progress: Progress) -> str:
        """``3 of 5 sent; 2 failed: <reason> (2)``: the distinct reasons, most frequent first."""
        text = f"{progress.verified} of {progress.expected} sent"
        if progress.failed:
            reasons = Counter(progress.failed.values()).most_common()
            shown = "; ".join(f"{reason} ({n})" for reason, n in reasons[:3])
            more = f"; and {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
            text += f"; {len(progress.failed)} failed: {shown}{more}"
        return text

    # -- waiting items -----------------------------------------------------------------

    async def sweep_waiting(self) -> int:
        """Announce again every waiting item whose time came (its quiet period is over, or
        it rested ``recheck_seconds``); the number announced. None while export is
        switched off."""
        if not await self.enabled():
            return 0
        now = asyncio.get_running_loop().time()
        announced = 0
        current: set[ItemKey] = set()
        for job, position, age in await records.waiting_items(self.pool):
            key = (job, position)
            current.add(key)
            due = self._due.get(key)
            if (now >= due) if due is not None else (age >= self.recheck_seconds):
                await self._announce(job, position)
                self._due[key] = now + self.recheck_seconds
                announced += 1
        for key in list(self._due):
            if key not in current and self._due[key] < now:
                del self._due[key]
        return announced

    async def run_sweeper(self) -> None:
        """Sweep waiting items about every second until cancelled."""
        tick = min(self.recheck_seconds, 1.0)
        while True:
            try:
                await self.sweep_waiting()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database or the broker is down: next tick
                log.warning("waiting exports not swept", extra=log_fields(
                    error=type(exc).__name__))
            await asyncio.sleep(tick)
