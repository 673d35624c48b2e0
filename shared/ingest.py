"""Taking an object into the system: store it in the incoming bucket, announce it on the
anonymize queue, record the receipt. Used by the Storage SCP and by ``anon import``.

The object is stored before it is announced, and the caller is told "received" only after
the broker confirmed the message. If announcing fails, the stored object is deleted again
so nothing half-done remains, and the caller is told to retry.

A caller that stops waiting (the Storage SCP answers its sender when its storage wait
times out) passes a :class:`Receipt`: the receipt and the wait race for one decision, made
under a lock just before the object is announced (or its quarantine recorded). If the wait
gave up first, the receipt deletes what it stored and announces nothing; if the receipt
got there first, the caller waits for its outcome. A receipt cancelled at any await deletes
what it stored, also when the store's upload is still running in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mmap
import re
import threading
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from shared.dicom.errors import RejectedObject
from shared.dicom.parse import parse
from shared.index.phi_index import PhiIndex
from shared.messaging import Broker
from shared.messaging.topology import ANONYMIZE
from shared.observability.logging import log_fields
from shared.observability.metrics import QUARANTINED, RECEIVE_SECONDS, RECEIVED
from shared.storage import Buckets, ObjectStore

log = logging.getLogger(__name__)


class IngestFailed(Exception):
    """The object could not be stored or announced; nothing of it was kept."""


class Abandoned(Exception):
    """The caller stopped waiting before the receipt was committed; nothing of it was kept
    and nothing was announced."""


class ObjectTooLarge(RejectedObject):
    """The object is larger than the largest this system accepts (refused unread)."""

    code = "limit-exceeded"


class Unreadable(RejectedObject):
    """Validation itself failed on the object (nesting too deep for the reader, memory
    exhausted, or an error of the reader): the object cannot be understood as sent."""

    code = "unreadable"


@dataclass(frozen=True, slots=True)
class Received:
    key: str
    quarantined: bool
    reason: str = ""
    code: str = ""


class Receipt:
    """The one decision between a receipt and a caller that may stop waiting for it.

    :meth:`commit` (the receipt, just before its point of no return) and :meth:`abandon`
    (the caller, when its time is up) are called from any thread; whichever comes first
    wins, and the other learns it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "pending"

    def commit(self) -> bool:
        """True if the receipt may go on (it can no longer be abandoned)."""
        with self._lock:
            if self._state == "abandoned":
                return False
            self._state = "committed"
            return True

    def abandon(self) -> bool:
        """True if the receipt is abandoned (it will keep and announce nothing); False if
        it is already committed and its outcome must be awaited."""
        with self._lock:
            if self._state == "committed":
                return False
            self._state = "abandoned"
            return True

    @property
    def abandoned(self) -> bool:
        with self._lock:
            return self._state == "abandoned"


# The keys :func:`object_key` gives, by the digest of the SOP Instance UID (and, once
# released from quarantine, under the prefix ``released/``).
RECEIVED_KEY = re.compile(
    r"(?:released/)?[0-9a-f]{2}/(?P<digest>[0-9a-f]{64})\.[0-9a-f]+\.dcm")


def uid_digest(sop_instance_uid: str) -> str:
    """The digest naming an instance in incoming keys (never the UID itself: PHI)."""
    return hashlib.sha256(sop_instance_uid.encode("ascii", "replace")).hexdigest()


def object_key(sop_instance_uid: str) -> str:
    """The incoming key of one receipt: a hash of the SOP Instance UID (no PHI in keys)
    and a unique suffix, so a second receipt of an instance never overwrites the first
    while its message is queued (the worker recognises the duplicate)."""
    digest = uid_digest(sop_instance_uid)
    return f"{digest[:2]}/{digest}.{uuid.uuid4().hex[:12]}.dcm"


def fallback_key(data: bytes) -> str:
    """Key of an object without a readable SOP Instance UID."""
    digest = hashlib.sha256(data[: 1 << 20]).hexdigest()
    return f"unreadable/{digest}.{uuid.uuid4().hex[:12]}.dcm"


def _file_key(path: Path) -> str:
    with path.open("rb") as handle:
        return fallback_key(handle.read(1 << 20))


def validate(data: bytes) -> str:
    """The incoming key of a valid object; raises :class:`RejectedObject` with the reason
    for any object that cannot be taken in, whatever failed in the reader."""
    try:
        obj = parse(data)
        return object_key(obj.get_text(0x00080018) or "")
    except RejectedObject:
        raise
    except RecursionError:
        raise Unreadable("the object nests sequences too deeply to be read") from None
    except MemoryError:
        raise Unreadable("reading the object exhausted the memory") from None
    except Exception as exc:  # a reader bug must not make the sender retry forever
        raise Unreadable(f"the reader failed on the object ({type(exc).__name__})") from None


class Ingest:
    """Stores, announces and records received objects."""

    def __init__(
        self,
        store: ObjectStore,
        buckets: Buckets,
        broker: Broker,
        index: PhiIndex,
        max_object_bytes: int | None = None,
    ) -> None:
        self.store = store
        self.buckets = buckets
        self.broker = broker
        self.index = index
        self.max_object_bytes = max_object_bytes
        self._bookkeeping: set[asyncio.Future[Any]] = set()

    async def receive(
        self, data: bytes, source: str, calling_ae: str = "", receipt: Receipt | None = None
    ) -> Received:
        """Take one PS3.10 object in. Objects that fail validation go to quarantine with
        the reason (and are reported as such); raises :class:`IngestFailed` when storage
        or broker cannot take the object, :class:`Abandoned` when ``receipt`` was abandoned
        before it was committed."""
        self._track_current()
        too_large = self._too_large(len(data))
        if too_large is not None:
            return await self._refuse(fallback_key(data), data, None, too_large, receipt)
        return await self._receive(data, None, source, calling_ae, receipt)

    async def receive_file(
        self, path: Path, source: str, calling_ae: str = "", receipt: Receipt | None = None
    ) -> Received:
        """As :meth:`receive` for an object in a file, which is validated through a memory
        map and streamed to storage, never read into memory as a whole. A file larger than
        ``max_object_bytes`` is quarantined unread."""
        self._track_current()
        size = path.stat().st_size
        too_large = self._too_large(size)
        if too_large is not None:
            return await self._refuse(_file_key(path), b"", path, too_large, receipt)
        if size == 0:
            return await self._receive(b"", None, source, calling_ae, receipt)
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view,
        ):
            return await self._receive(cast(bytes, view), path, source, calling_ae, receipt)

    async def relay_file(self, path: Path, key: str, source: str, calling_ae: str) -> None:
        """Store and announce an object already checked (a Storage SCP journal entry,
        under the key its check gave); raises :class:`IngestFailed` with nothing announced
        when storage or broker cannot take it."""
        self._track_current()
        started = time.perf_counter()
        metadata = {"source": source, "calling-ae": calling_ae}
        incoming = self.buckets.incoming
        await self._put(incoming, key, b"", path, metadata)
        await self._announce(incoming, key, source)
        size = path.stat().st_size
        self._in_background(self._record(key, source, calling_ae, size))
        RECEIVED.labels(source=source).inc()
        RECEIVE_SECONDS.observe(time.perf_counter() - started)

    async def keep_refused(self, path: Path, key: str, code: str, reason: str) -> None:
        """Keep an object refused when it was received in quarantine, with its reason."""
        self._track_current()
        refusal = RejectedObject(reason)
        refusal.code = code
        await self._refuse(key, b"", path, refusal, None)

    async def _announce(self, bucket: str, key: str, source: str) -> None:
        """Publish the anonymize message of a stored object; deletes the object again
        (and raises IngestFailed) when the broker does not confirm it."""
        try:
            await self.broker.publish(
                ANONYMIZE, {"bucket": bucket, "key": key, "source": source},
                correlation_id=key.rsplit("/", 1)[-1][:16],
            )
        except asyncio.CancelledError:
            # The message may or may not be queued: without its object it changes nothing.
            self._in_background(self._delete_quietly(bucket, key))
            raise
        except Exception as exc:
            await self._discard(bucket, key)
            raise IngestFailed(f"broker: {exc.__class__.__name__}") from exc

    def _too_large(self, size: int) -> ObjectTooLarge | None:
        if self.max_object_bytes is None or size <= self.max_object_bytes:
            return None
        return ObjectTooLarge(
            f"the object has {size} bytes, more than the largest accepted "
            f"({self.max_object_bytes} bytes, MAX_OBJECT_BYTES)"
        )

    async def _receive(
        self, data: bytes, path: Path | None, source: str, calling_ae: str,
        receipt: Receipt | None,
    ) -> Received:
        started = time.perf_counter()
        try:
            # Reading is CPU work on objects of any size: off the loop that serves the SCP.
            key = await asyncio.to_thread(validate, data)
        except RejectedObject as exc:
            return await self._refuse(fallback_key(data), data, path, exc, receipt)
        if receipt is not None and receipt.abandoned:
            raise Abandoned
        metadata = {"source": source, "calling-ae": calling_ae}
        incoming = self.buckets.incoming
        await self._put(incoming, key, data, path, metadata)
        if receipt is not None and not receipt.commit():
            await self._discard(incoming, key)
            raise Abandoned
        await self._announce(incoming, key, source)
        # Bookkeeping only (the worker records the receipt too): not on the sender's time.
        self._in_background(self._record(key, source, calling_ae, len(data)))
        RECEIVED.labels(source=source).inc()
        RECEIVE_SECONDS.observe(time.perf_counter() - started)
        return Received(key, False)

    async def _put(
        self, bucket: str, key: str, data: bytes, path: Path | None, metadata: dict[str, str]
    ) -> None:
        """Store one object. Cancelled, it lets the upload finish (it may be running in a
        thread, where it cannot be stopped) and deletes the object in the background."""
        if path is None:
            upload: Awaitable[None] = self.store.put(bucket, key, data, metadata)
        else:
            upload = self.store.put_file(bucket, key, path, metadata)
        task = asyncio.ensure_future(upload)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            self._in_background(self._delete_after(task, bucket, key))
            raise
        except Exception as exc:
            raise IngestFailed(f"storage: {exc.__class__.__name__}") from exc

    async def _delete_after(self, upload: asyncio.Future[None], bucket: str, key: str) -> None:
        with contextlib.suppress(Exception):
            await upload
        await self._delete_quietly(bucket, key)

    async def _discard(self, bucket: str, key: str) -> None:
        """Delete what a receipt stored before it reports failure; cancelled, the deletion
        still completes (in the background)."""
        deletion = asyncio.ensure_future(self._delete_quietly(bucket, key))
        self._track(deletion)
        await asyncio.shield(deletion)

    async def _delete_quietly(self, bucket: str, key: str) -> None:
        try:
            await self.store.delete(bucket, key)
        except Exception as exc:
            log.error("stored object of a failed receipt not deleted",
                      extra=log_fields(key=key, error=type(exc).__name__))

    def _track_current(self) -> None:
        """Let :meth:`drain` wait for the receipt running in the current task."""
        task = asyncio.current_task()
        if task is not None and task not in self._bookkeeping:
            self._track(task)

    def _in_background(self, work: Awaitable[None]) -> None:
        self._track(asyncio.ensure_future(work))

    def _track(self, task: asyncio.Future[Any]) -> None:
        self._bookkeeping.add(task)
        task.add_done_callback(self._bookkeeping.discard)

    async def _record(self, key: str, source: str, calling_ae: str, size: int) -> None:
        try:
            await self.index.record_received(key, source, calling_ae, size)
        except Exception as exc:
            log.warning("receipt not recorded", extra=log_fields(key=key, error=type(exc).__name__))

    async def drain(self) -> None:
        """Wait for the receipts in flight, those still being recorded and the deletions
        still running."""
        current = asyncio.current_task()
        while pending := [task for task in self._bookkeeping if task is not current]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _refuse(
        self, key: str, data: bytes, path: Path | None, exc: RejectedObject,
        receipt: Receipt | None,
    ) -> Received:
        """Keep a refused object in quarantine with the reason, and record the refusal."""
        if receipt is not None and receipt.abandoned:
            raise Abandoned
        metadata = {"stage": "ingest", "reason-code": exc.code, "reason": exc.reason}
        quarantine = self.buckets.quarantine
        await self._put(quarantine, key, data, path, metadata)
        if receipt is not None and not receipt.commit():
            await self._discard(quarantine, key)
            raise Abandoned
        try:
            await self.index.record_quarantined(key, "ingest", exc.code, exc.reason)
        except asyncio.CancelledError:
            self._in_background(self._delete_quietly(quarantine, key))
            raise
        except Exception as error:
            await self._discard(quarantine, key)
            raise IngestFailed(f"index: {error.__class__.__name__}") from error
        QUARANTINED.labels(stage="ingest", reason_code=exc.code).inc()
        return Received(key, True, exc.reason, exc.code)
