"""One round of an export: fetch the objects still to send from the store, send them from
a worker thread over as few associations as their presentation contexts allow, and record
every outcome in the index in batches while it goes.

The event loop fetches ahead (a few fetches at a time, at most ``READ_AHEAD`` objects on
disk) into a temporary folder, reading only each file's meta; from a local store, a
fetch is a hard link to the stored file (no copy, and a snapshot: a replaced or deleted
object leaves the linked one intact); the thread sends; a recorder
writes the outcomes every ``FLUSH_SECONDS`` and once more at the end, so the instances the
destination accepted are known even when the round is cut short or cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from shared.export import records
from shared.export.destination import Destination
from shared.export.meta import NotPart10, read_meta
from shared.export.records import Planned
from shared.export.sender import Handoff, Outcome, Outgoing, Pair, RoundEnd, Sender
from shared.index import jobs
from shared.observability.logging import log_fields
from shared.observability.metrics import EXPORTED
from shared.storage import ObjectNotFound, ObjectStore
from shared.storage.base import validate_key
from shared.storage.keys import UnsafePath, contained
from shared.storage.local import LocalStore

log = logging.getLogger(__name__)

READ_AHEAD = 16  # objects fetched and waiting for the sending thread
FETCHERS = 4  # fetches from the store at a time
FLUSH_SECONDS = 0.5


@dataclass
class Progress:
    """Counts of one item's export so far (the item's counters). Adding an outcome twice
    changes nothing."""

    expected: int
    already: int  # accepted before this delivery (a resumed item)
    accepted: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)  # instance row -> reason
    warned: set[int] = field(default_factory=set)

    def add(self, outcome: Outcome) -> None:
        if outcome.accepted:
            self.accepted.add(outcome.instance)
            self.failed.pop(outcome.instance, None)
            if outcome.warning:
                self.warned.add(outcome.instance)
        else:
            self.failed[outcome.instance] = outcome.reason

    @property
    def verified(self) -> int:
        """Instances the destination accepted for this item."""
        return self.already + len(self.accepted)

    def handled(self, instance: int) -> bool:
        """Accepted, or failed for good."""
        return instance in self.accepted or instance in self.failed

    async def save(
        self, pool: asyncpg.Pool, item: jobs.Item, *, status: str | None = None,
        message: str | None = None,
    ) -> None:
        """Write the counters (and a status and message) to the item."""
        await jobs.update_item(pool, item.job, item.position, status=status, message=message,
                               expected=self.expected, verified=self.verified,
                               failed=len(self.failed), warning=len(self.warned))


class Transfer:
    """The sending of one export item to one destination, round after round."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: ObjectStore,
        bucket: str,
        destination: Destination,
        item: jobs.Item,
        progress: Progress,
    ) -> None:
        self.pool = pool
        self.store = store
        self.bucket = bucket
        self.destination = destination
        self.where = destination.describe()
        self.item = item
        self.progress = progress
        self.rejected: set[Pair] = set()  # presentation contexts the destination refused
        self.associations = 0
        # A local store's bucket folder: objects are linked from there, not copied.
        self._linked_from = (store.root / bucket) if isinstance(store, LocalStore) else None

    async def round(self, items: Sequence[Planned]) -> RoundEnd:
        """Send ``items`` once; every outcome is recorded before this returns (also when
        it raises or is cancelled). Raises what the store raised if it failed."""
        loop = asyncio.get_running_loop()
        handoff = Handoff(loop, READ_AHEAD)
        outcomes: deque[Outcome] = deque()
        stop = threading.Event()
        sender = Sender(self.destination, [p.sop_class for p in items], outcomes.append,
                        stop, self.rejected)
        spool = self._linked_from.parent.parent if self._linked_from is not None else None
        with tempfile.TemporaryDirectory(prefix="export-", dir=spool,
                                         ignore_cleanup_errors=True) as tmp:
            fetching = asyncio.create_task(
                self._fetch(items, handoff, Path(tmp), outcomes.append))
            sending = asyncio.ensure_future(asyncio.to_thread(sender.run, handoff))
            done = asyncio.Event()
            recording = asyncio.create_task(self._record_periodically(outcomes, done))
            try:
                end = await _thread_result(sending, stop, handoff)
            finally:
                done.set()  # not cancelled: a batch half written would be written twice
                await asyncio.wait({recording})
                # The thread took its last object: the fetchers stop at their next one.
                await asyncio.wait({fetching})
                await self.flush(outcomes)
                self.associations += sender.associations
            fetching.result()  # a storage failure: the caller's delivery fails, and resumes
        return end

    async def fail(self, items: Sequence[Planned], reason: str) -> None:
        """Record ``items`` as failed for ``reason`` (nothing of them can be sent now)."""
        await self.flush(deque(Outcome(p.id, False, reason) for p in items))

    async def flush(self, outcomes: deque[Outcome]) -> None:
        """Write the outcomes gathered so far, then update the item's counters."""
        batch = list(outcomes)
        if not batch:
            return
        await records.record(self.pool, self.where, self.item.job, batch)
        for _ in batch:
            outcomes.popleft()
        accepted = sum(1 for o in batch if o.accepted)
        for outcome in batch:
            self.progress.add(outcome)
        if accepted:
            EXPORTED.labels(outcome="sent").inc(accepted)
        if len(batch) > accepted:
            EXPORTED.labels(outcome="failed").inc(len(batch) - accepted)
        await self.progress.save(self.pool, self.item)

    async def _record_periodically(self, outcomes: deque[Outcome], done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), FLUSH_SECONDS)
            if done.is_set():
                return
            try:
                await self.flush(outcomes)
            except (OSError, asyncpg.PostgresError) as exc:  # kept; written at the end
                log.warning("export statuses not recorded yet",
                            extra=log_fields(job=self.item.job, error=type(exc).__name__))

    async def _fetch(
        self, items: Sequence[Planned], handoff: Handoff, folder: Path,
        report: Callable[[Outcome], None],
    ) -> None:
        """Fetch each object into ``folder`` and hand it over with its file meta. An object
        missing from the store or without file meta fails for good; any other storage
        error stops the fetching and is raised."""
        pending = iter(items)
        errors: list[Exception] = []

        async def fetcher() -> None:
            for planned in pending:
                if errors or not await handoff.reserve():
                    return
                path = folder / f"{planned.id}.dcm"
                try:
                    await self._get_file(planned.key, path)
                    sop_class, syntax = read_meta(path)
                except (ObjectNotFound, UnsafePath, NotPart10, ValueError) as exc:
                    handoff.unreserve()
                    report(Outcome(planned.id, False, _unreadable(exc)))
                    continue
                except Exception as exc:
                    handoff.unreserve()
                    errors.append(exc)
                    return
                handoff.put(Outgoing(planned.id, path, sop_class, syntax))

        try:
            await asyncio.gather(*(fetcher() for _ in range(FETCHERS)))
        finally:
            handoff.finish()
        if errors:
            raise errors[0]


    async def _get_file(self, key: str, path: Path) -> None:
        """The object at ``path``: a hard link from a local store (copied through the store
        when that fails, e.g. across file systems), else fetched from the store."""
        if self._linked_from is not None:
            try:
                os.link(contained(self._linked_from, validate_key(key), "object key"), path)
                return
            except FileNotFoundError:
                pass  # the store says whether the object or the store is missing
            except OSError:
                self._linked_from = None
        await self.store.get_file(self.bucket, key, path)


def _unreadable(exc: Exception) -> str:
    if isinstance(exc, ObjectNotFound):
        return "the de-identified object is missing from the object store"
    if isinstance(exc, NotPart10):
        return str(exc)
    return "the de-identified object's key or file cannot be read"


async def _thread_result(
    sending: asyncio.Future[RoundEnd], stop: threading.Event, handoff: Handoff
) -> RoundEnd:
    """The sending thread's result. Cancelled: tell the thread to stop after the C-STORE
    in progress, wait for it (its files must stay until then), then cancel."""
    try:
        return await asyncio.shield(sending)
    except asyncio.CancelledError:
        stop.set()
        handoff.close()
        await asyncio.wait({sending})
        raise
