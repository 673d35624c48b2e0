"""Taking an object into the system: store it in the incoming bucket, announce it on the
anonymize queue, record the receipt. Used by the Storage SCP and by ``anon import``.

The object is stored before it is announced, and the caller is told "received" only after
the broker confirmed the message. If announcing fails, the stored object is deleted again
so nothing half-done remains, and the caller is told to retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mmap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import cast

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


@dataclass(frozen=True, slots=True)
class Received:
    key: str
    quarantined: bool
    reason: str = ""


def object_key(sop_instance_uid: str) -> str:
    """The incoming key of one receipt: a hash of the SOP Instance UID (no PHI in keys)
    and a unique suffix, so a second receipt of an instance never overwrites the first
    while its message is queued (the worker recognises the duplicate)."""
    digest = hashlib.sha256(sop_instance_uid.encode("ascii", "replace")).hexdigest()
    return f"{digest[:2]}/{digest}.{uuid.uuid4().hex[:12]}.dcm"


def fallback_key(data: bytes) -> str:
    """Key of an object without a readable SOP Instance UID."""
    digest = hashlib.sha256(data[: 1 << 20]).hexdigest()
    return f"unreadable/{digest}.{uuid.uuid4().hex[:12]}.dcm"


class Ingest:
    """Stores, announces and records received objects."""

    def __init__(
        self, store: ObjectStore, buckets: Buckets, broker: Broker, index: PhiIndex
    ) -> None:
        self.store = store
        self.buckets = buckets
        self.broker = broker
        self.index = index
        self._bookkeeping: set[asyncio.Task[None]] = set()

    async def receive(self, data: bytes, source: str, calling_ae: str = "") -> Received:
        """Take one PS3.10 object in. Objects that fail validation go to quarantine with
        the reason (and are reported as such); raises :class:`IngestFailed` when storage
        or broker cannot take the object."""
        return await self._receive(data, None, source, calling_ae)

    async def receive_file(self, path: Path, source: str, calling_ae: str = "") -> Received:
        """As :meth:`receive` for an object in a file, which is validated through a memory
        map and streamed to storage, never read into memory as a whole."""
        size = path.stat().st_size
        if size == 0:
            return await self._receive(b"", None, source, calling_ae)
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view,
        ):
            return await self._receive(cast(bytes, view), path, source, calling_ae)

    async def _receive(
        self, data: bytes, path: Path | None, source: str, calling_ae: str
    ) -> Received:
        started = time.perf_counter()
        try:
            obj = parse(data)
        except RejectedObject as exc:
            key = fallback_key(data)
            await self._quarantine(key, data, path, exc)
            return Received(key, True, exc.reason)
        key = object_key(obj.get_text(0x00080018) or "")
        metadata = {"source": source, "calling-ae": calling_ae}
        try:
            if path is None:
                await self.store.put(self.buckets.incoming, key, data, metadata)
            else:
                await self.store.put_file(self.buckets.incoming, key, path, metadata)
        except Exception as exc:
            raise IngestFailed(f"storage: {exc.__class__.__name__}") from exc
        try:
            await self.broker.publish(
                ANONYMIZE, {"bucket": self.buckets.incoming, "key": key, "source": source},
                correlation_id=key.rsplit("/", 1)[-1][:16],
            )
        except Exception as exc:
            try:
                await self.store.delete(self.buckets.incoming, key)
            finally:
                raise IngestFailed(f"broker: {exc.__class__.__name__}") from exc
        # Bookkeeping only (the worker records the receipt too): not on the sender's time.
        task = asyncio.create_task(self._record(key, source, calling_ae, len(data)))
        self._bookkeeping.add(task)
        task.add_done_callback(self._bookkeeping.discard)
        RECEIVED.labels(source=source).inc()
        RECEIVE_SECONDS.observe(time.perf_counter() - started)
        return Received(key, False)

    async def _record(self, key: str, source: str, calling_ae: str, size: int) -> None:
        try:
            await self.index.record_received(key, source, calling_ae, size)
        except Exception as exc:
            log.warning("receipt not recorded", extra=log_fields(key=key, error=type(exc).__name__))

    async def drain(self) -> None:
        """Wait for the receipts still being recorded."""
        if self._bookkeeping:
            await asyncio.gather(*self._bookkeeping, return_exceptions=True)

    async def _quarantine(
        self, key: str, data: bytes, path: Path | None, exc: RejectedObject
    ) -> None:
        metadata = {"stage": "ingest", "reason-code": exc.code, "reason": exc.reason}
        try:
            if path is None:
                await self.store.put(self.buckets.quarantine, key, data, metadata)
            else:
                await self.store.put_file(self.buckets.quarantine, key, path, metadata)
        except Exception as error:
            raise IngestFailed(f"storage: {error.__class__.__name__}") from error
        await self.index.record_quarantined(key, "ingest", exc.code, exc.reason)
        QUARANTINED.labels(stage="ingest", reason_code=exc.code).inc()
