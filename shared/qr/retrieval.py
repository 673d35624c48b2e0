"""Retrieving one item of a retrieve job, and verifying that every instance arrived.

An item is a key (a study UID, an accession number, or a row of a batch spreadsheet). It
is first found on the PACS (a key that matches nothing, or an accession that matches
several studies, ends the item with that finding). For each study found:

1. ask the PACS what it holds (an image-level C-FIND) and compare it with what arrived;
2. request what is missing: the whole study at first, then only the series that are
   wholly missing and the single images of the others;
3. wait for the instances to arrive, as long as new ones keep coming within
   ``QR_ARRIVAL_WAIT_SECONDS`` (archives that send after answering);
4. ask the PACS again (a study may gain instances meanwhile) and repeat from 2, at most
   ``QR_RETRIES`` more times.

The item is ``complete`` only when every instance the PACS holds has arrived; otherwise
it ends ``incomplete`` naming how many are missing, or ``failed`` when the PACS could
not be used at all, with the reason in an operator's words. A redelivered message of a
finished item does nothing; one of an unfinished item starts again from step 1, which
requests nothing that already arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from pynetdicom import evt

from shared.dimse.peer import DimseError, Peer
from shared.dimse.query import StudyQuery, find_instances, find_studies
from shared.dimse.retrieve import RetrieveOutcome, RetrieveProgress, get, move
from shared.index import jobs
from shared.observability.metrics import (
    RETRIEVE_INSTANCES,
    RETRIEVE_REQUESTS,
    RETRIEVE_SECONDS,
    RETRIEVES,
)
from shared.qr.arrivals import arrivals

log = logging.getLogger(__name__)

# Most SOP Instance UIDs named in one image-level request.
IMAGES_PER_REQUEST = 200
POLL_SECONDS = 0.2
PROGRESS_SECONDS = 1.0

Store = Callable[[evt.Event], int]


@dataclass(frozen=True)
class RetrieveConfig:
    """How to reach the PACS and how hard to try (from the QR_* settings)."""

    peer: Peer
    method: str  # move or get
    destination_aet: str
    arrival_wait: float
    retries: int
    move_timeout: float
    max_results: int


def item_key(kind: str, value: str | dict[str, str]) -> str:
    """The stored key of an item: ``study-uid``, ``accession`` or ``query`` (PHI)."""
    return json.dumps({"kind": kind, "value": value}, ensure_ascii=False, sort_keys=True)


@dataclass
class _Study:
    uid: str
    expected: dict[str, set[str]] = field(default_factory=dict)
    missing: dict[str, set[str]] = field(default_factory=dict)
    quarantined: int = 0
    outcome: RetrieveOutcome | None = None
    requests: int = 0

    @property
    def expected_count(self) -> int:
        return sum(len(s) for s in self.expected.values())

    @property
    def missing_count(self) -> int:
        return sum(len(s) for s in self.missing.values())


class ItemFailed(Exception):
    """The item cannot be worked; ``status`` is failed, not-found or ambiguous."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class Retriever:
    """Works retrieve items; ``store`` receives the objects of a C-GET."""

    def __init__(self, pool: asyncpg.Pool, config: RetrieveConfig,
                 store: Store | None = None) -> None:
        self.pool = pool
        self.config = config
        self.store = store

    async def run_item(self, job_id: int, position: int) -> None:
        item = await jobs.item(self.pool, job_id, position)
        if item.finished:
            return
        started = time.monotonic()
        studies: list[_Study] = []
        await jobs.update_item(self.pool, job_id, position, status=jobs.RUNNING,
                               message="finding the study on the PACS")
        try:
            uids = await self._resolve(item.key, item.study_uid)
            studies = [_Study(uid) for uid in uids]
            await jobs.update_item(self.pool, job_id, position, study_uid=uids[0])
            for study in studies:
                await self._retrieve(job_id, position, study, studies)
        except ItemFailed as exc:
            RETRIEVES.labels(outcome=exc.status).inc()
            await jobs.update_item(self.pool, job_id, position, status=exc.status,
                                   message=str(exc))
            return
        except DimseError as exc:
            RETRIEVES.labels(outcome=jobs.FAILED).inc()
            await jobs.update_item(self.pool, job_id, position, status=jobs.FAILED,
                                   message=str(exc), totals=_totals(studies))
            return
        RETRIEVE_SECONDS.observe(time.monotonic() - started)
        await self._finish(job_id, position, studies)

    async def _resolve(self, stored_key: str, known_uid: str) -> list[str]:
        """The study UIDs an item's key stands for."""
        key: dict[str, Any] = json.loads(stored_key)
        kind, value = key["kind"], key["value"]
        if kind == "study-uid":
            query = StudyQuery(study_uid=str(value))
        elif kind == "accession":
            query = StudyQuery(accession=str(value))
        else:
            query = StudyQuery(**{k: str(v) for k, v in dict(value).items()})
        matches = await asyncio.to_thread(find_studies, self.config.peer, query,
                                          self.config.max_results)
        if not matches:
            what = {"study-uid": "this study instance UID", "accession": "this accession number"}
            raise ItemFailed(jobs.NOT_FOUND,
                             f"the PACS has no study with {what.get(kind, 'these keys')}")
        if kind == "accession" and len(matches) > 1:
            raise ItemFailed(jobs.AMBIGUOUS,
                             f"{len(matches)} studies have this accession number; retrieve them "
                             "by study instance UID (SI: lines) instead")
        return [m.study_uid for m in matches]

    async def _retrieve(self, job_id: int, position: int, study: _Study,
                        studies: list[_Study]) -> None:
        for attempt in range(self.config.retries + 1):
            await self._compare(study)
            if not study.missing:
                return
            requests: list[tuple[str | None, list[str] | None]]
            if attempt == 0 and study.missing_count == study.expected_count:
                requests = [(None, None)]  # nothing arrived yet: the whole study
            else:
                requests = self._requests_for(study)
            for series, images in requests:
                study.outcome = await self._request(job_id, position, study, series, images)
                study.requests += 1
            await self._wait_for_arrivals(job_id, position, study, studies)
        await self._compare(study)

    async def _compare(self, study: _Study) -> None:
        """What the PACS holds of the study now, and what of it has not arrived."""
        study.expected = await asyncio.to_thread(find_instances, self.config.peer, study.uid)
        if not study.expected:
            raise ItemFailed(jobs.FAILED, "the PACS lists no instance of the study")
        everything = {uid for uids in study.expected.values() for uid in uids}
        seen = await arrivals(self.pool, everything)
        study.quarantined = len(seen.quarantined)
        study.missing = {series: uids - seen.arrived
                         for series, uids in study.expected.items() if uids - seen.arrived}

    def _requests_for(self, study: _Study) -> list[tuple[str | None, list[str] | None]]:
        """Wholly missing series by series, the rest image by image (in chunks)."""
        requests: list[tuple[str | None, list[str] | None]] = []
        for series, missing in sorted(study.missing.items()):
            if missing == study.expected.get(series):
                requests.append((series, None))
                continue
            ordered = sorted(missing)
            for start in range(0, len(ordered), IMAGES_PER_REQUEST):
                requests.append((series, ordered[start:start + IMAGES_PER_REQUEST]))
        return requests

    async def _request(self, job_id: int, position: int, study: _Study, series: str | None,
                       images: list[str] | None) -> RetrieveOutcome:
        level = "image" if images else "series" if series else "study"
        RETRIEVE_REQUESTS.labels(method=self.config.method, level=level).inc()
        latest: list[RetrieveProgress] = []
        loop = asyncio.get_running_loop()

        def progress(counts: RetrieveProgress) -> None:
            loop.call_soon_threadsafe(latest.append, counts)

        async def report() -> None:
            while True:
                await asyncio.sleep(PROGRESS_SECONDS)
                if latest:
                    counts = latest[-1]
                    await jobs.update_item(
                        self.pool, job_id, position, remaining=counts.remaining,
                        completed=counts.completed, failed=counts.failed,
                        warning=counts.warning,
                        message=f"retrieving ({level} level): {counts.completed} received, "
                                f"{counts.remaining} to come")

        reporting = asyncio.create_task(report())
        try:
            if self.config.method == "get":
                if self.store is None:
                    raise ItemFailed(jobs.FAILED, "C-GET is configured but nothing receives")
                return await asyncio.to_thread(
                    get, self.config.peer, study.uid, self.store, series_uid=series,
                    sop_uids=images, on_progress=progress, timeout=self.config.move_timeout)
            return await asyncio.to_thread(
                move, self.config.peer, self.config.destination_aet, study.uid,
                series_uid=series, sop_uids=images, on_progress=progress,
                timeout=self.config.move_timeout)
        finally:
            reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporting

    async def _wait_for_arrivals(self, job_id: int, position: int, study: _Study,
                                 studies: list[_Study]) -> None:
        """Poll until nothing is missing, or no new instance came for the waiting time."""
        everything = {uid for uids in study.expected.values() for uid in uids}
        outcome = study.outcome
        sent_nothing = outcome is not None and outcome.completed == 0 and not outcome.succeeded
        # A PACS that reported it sent nothing is not waited for long.
        patience = min(self.config.arrival_wait, 1.0) if sent_nothing else self.config.arrival_wait
        last_count, last_change = -1, time.monotonic()
        while True:
            seen = await arrivals(self.pool, everything)
            count = len(seen.arrived)
            if count != last_count:
                last_count, last_change = count, time.monotonic()
                missing = len(everything) - count
                await jobs.update_item(
                    self.pool, job_id, position, totals=_totals(studies),
                    message=f"verifying: {count} of {len(everything)} instances arrived")
                if not missing:
                    return
            if time.monotonic() - last_change >= patience:
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _finish(self, job_id: int, position: int, studies: list[_Study]) -> None:
        totals = _totals(studies)
        RETRIEVE_INSTANCES.inc(totals["verified"])
        quarantined = sum(s.quarantined for s in studies)
        refused = (f"; {quarantined} of them refused by the filter or the checks (quarantined)"
                   if quarantined else "")
        what = f"{len(studies)} studies" if len(studies) > 1 else "the study"
        if totals["missing"] == 0:
            RETRIEVES.labels(outcome=jobs.COMPLETE).inc()
            await jobs.update_item(
                self.pool, job_id, position, status=jobs.COMPLETE, totals=totals,
                message=f"all {totals['expected']} instances of {what} arrived{refused}")
            return
        RETRIEVES.labels(outcome=jobs.INCOMPLETE).inc()
        reasons = sorted({s.outcome.message for s in studies
                          if s.outcome is not None and s.outcome.message})
        because = f"; the PACS said: {' / '.join(reasons)}" if reasons else ""
        requests = sum(s.requests for s in studies)
        await jobs.update_item(
            self.pool, job_id, position, status=jobs.INCOMPLETE, totals=totals,
            message=f"{totals['missing']} of {totals['expected']} instances still missing after "
                    f"{requests} request{'s' if requests != 1 else ''}{because}{refused}; "
                    "retrieve again to request the rest")


def _totals(studies: list[_Study]) -> dict[str, int]:
    expected = sum(s.expected_count for s in studies)
    missing = sum(s.missing_count for s in studies)
    outcomes = [s.outcome for s in studies if s.outcome is not None]
    return {
        "expected": expected, "missing": missing, "verified": expected - missing,
        "remaining": sum(o.remaining for o in outcomes),
        "completed": sum(o.completed for o in outcomes),
        "failed": sum(o.failed for o in outcomes),
        "warning": sum(o.warning for o in outcomes),
        "attempts": sum(s.requests for s in studies),
    }
