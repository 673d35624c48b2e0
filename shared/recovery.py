"""Getting work back after a stop or a failure: objects received but never processed,
and messages in the dead-letter queue.

A received object is *processed* once its result is durable: an instance record in the
index (de-identified, stored, recorded) or a quarantine record. :func:`announce_unprocessed`
announces again every object of the incoming bucket that is neither (``anon serve`` runs
it at start, because its in-process queues do not survive the process; a deployed worker
may run it too). Announcing an object twice is harmless: the worker is idempotent.
:func:`announce_unrelinked` does the same for the relink queue.
:func:`sweep_incoming` deletes processed received objects (PHI) once their retention has
passed. :func:`redrive` moves dead letters back to their queue.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.config import Settings
from shared.dicom.errors import RejectedObject
from shared.dicom.parse import parse
from shared.index.phi_index import PhiIndex
from shared.ingest import RECEIVED_KEY, uid_digest
from shared.messaging import Broker, RabbitBroker
from shared.messaging.topology import ANONYMIZE, DEAD_LETTER, RELINK
from shared.runtime import topology_from
from shared.storage import Buckets, ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

_BATCH = 1000


class RedriveUnavailable(Exception):
    """Dead letters cannot be moved from here (no broker configured)."""


@dataclass(frozen=True)
class Backlog:
    """What :func:`unprocessed_keys` found in the incoming bucket: the processed keys
    with the time of their result, and the unprocessed keys."""

    incoming: int
    processed: dict[str, datetime]
    unprocessed: list[str]


async def _results(index: PhiIndex, keys: list[str], digests: list[str]) -> dict[str, datetime]:
    """When each processed key got its result: its quarantine record, or the first instance
    record of its SOP Instance UID (``digests``: sha256 of the UID, '' when unknown)."""
    async with index.pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT t.k, least("
            " (SELECT q.quarantined_at FROM quarantined_object q WHERE q.key = t.k),"
            " (SELECT min(i.created_at) FROM instance i"
            "  WHERE t.d <> '' AND uid_digest(i.original_sop_instance_uid) = t.d)) AS done_at"
            " FROM unnest($1::text[], $2::text[]) AS t(k, d)",
            keys, digests,
        )
    return {row["k"]: row["done_at"] for row in rows if row["done_at"] is not None}


async def _uid_digest(store: ObjectStore, bucket: str, key: str) -> str | None:
    """The digest of an object's SOP Instance UID, from its key or else from its content."""
    match = RECEIVED_KEY.fullmatch(key)
    if match is not None:
        return match["digest"]
    try:
        obj = parse(await store.get(bucket, key))
    except (ObjectNotFound, RejectedObject):
        return None
    uid = obj.get_text(0x00080018) or ""
    return uid_digest(uid) if uid else None


async def unprocessed_keys(
    store: ObjectStore, buckets: Buckets, index: PhiIndex, prefix: str = ""
) -> Backlog:
    """Sort the incoming bucket (the keys starting with ``prefix``) into processed and
    unprocessed objects (see the module)."""
    keys = await store.list_keys(buckets.incoming, prefix)
    processed: dict[str, datetime] = {}
    unprocessed: list[str] = []
    for start in range(0, len(keys), _BATCH):
        batch = keys[start:start + _BATCH]
        digests = [await _uid_digest(store, buckets.incoming, key) or "" for key in batch]
        results = await _results(index, batch, digests)
        processed.update(results)
        unprocessed += [key for key in batch if key not in results]
    return Backlog(len(keys), processed, unprocessed)


ACCEPT_METADATA = "accept-burned-in-annotation"


async def announcement(store: ObjectStore, buckets: Buckets, key: str, source: str) -> dict[
        str, object]:
    """The anonymize message of an incoming object; an object an operator released with
    its burned-in annotation accepted (metadata of a ``released/`` key) says so."""
    body: dict[str, object] = {"bucket": buckets.incoming, "key": key, "source": source}
    if key.startswith("released/"):
        try:
            metadata = await store.metadata(buckets.incoming, key)
        except ObjectNotFound:
            metadata = {}
        if metadata.get(ACCEPT_METADATA) == "true":
            body["accept_burned_in_annotation"] = True
    return body


async def announce_unprocessed(
    store: ObjectStore, buckets: Buckets, broker: Broker, index: PhiIndex
) -> Backlog:
    """Announce on the anonymize queue every incoming object that was not processed."""
    backlog = await unprocessed_keys(store, buckets, index)
    for key in backlog.unprocessed:
        await broker.publish(
            ANONYMIZE, await announcement(store, buckets, key, "recovered"),
            correlation_id=key.rsplit("/", 1)[-1][:16],
        )
    if backlog.unprocessed:
        log.warning("announced %d received objects again that were not processed",
                    len(backlog.unprocessed))
    return backlog


async def announce_unrelinked(
    store: ObjectStore, buckets: Buckets, broker: Broker, index: PhiIndex
) -> int:
    """Announce on the relink queue every de-identified object whose node the relinker has
    not recorded (its message was lost with an in-process queue); the number announced."""
    keys = await store.list_keys(buckets.deidentified)
    missing: list[str] = []
    for start in range(0, len(keys), _BATCH):
        batch = keys[start:start + _BATCH]
        async with index.pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT object_key FROM rt_object WHERE object_key = ANY($1::text[])", batch)
        recorded = {row["object_key"] for row in rows}
        missing += [key for key in batch if key not in recorded]
    for key in missing:
        await broker.publish(RELINK, {"bucket": buckets.deidentified, "key": key},
                             correlation_id=key.rsplit("/", 1)[-1][:16])
    if missing:
        log.warning("announced %d de-identified objects again for relinking", len(missing))
    return len(missing)


async def sweep_incoming(
    store: ObjectStore, buckets: Buckets, index: PhiIndex, retention_days: float
) -> int:
    """Delete the received objects whose result is older than ``retention_days`` (0: every
    processed one); unprocessed objects are never touched. The number deleted."""
    backlog = await unprocessed_keys(store, buckets, index)
    limit = datetime.now(UTC) - timedelta(days=retention_days)
    expired = [key for key, done in backlog.processed.items() if done <= limit]
    for key in expired:
        await store.delete(buckets.incoming, key)
    if expired:
        log.info("deleted %d received objects past their retention", len(expired))
    return len(expired)


async def sweep_periodically(
    store: ObjectStore, buckets: Buckets, index: PhiIndex, retention_days: float,
    interval: float = 3600.0,
) -> None:
    """Run :func:`sweep_incoming` every ``interval`` seconds until cancelled; a failed sweep
    is logged (by the exception's type) and tried again at the next interval."""
    while True:
        try:
            await sweep_incoming(store, buckets, index, retention_days)
        except Exception as exc:
            log.warning("retention sweep failed (%s); trying again later", type(exc).__name__)
        await asyncio.sleep(interval)


async def redrive(settings: Settings, queue: str | None = None) -> tuple[int, int]:
    """Move the dead letters of ``queue`` (every work queue if None) back to their queue on
    the configured RabbitMQ; (moved, left in the dead-letter queue)."""
    if not settings.amqp_url:
        raise RedriveUnavailable(
            "AMQP_URL is not set: the queues of anon serve live inside its process, and "
            "restarting it announces every object not yet processed again")
    broker = RabbitBroker(settings.amqp_url, topology_from(settings))
    await broker.connect()
    try:
        moved = await broker.redrive(queue or DEAD_LETTER)
        return moved, await broker.depth(DEAD_LETTER)
    finally:
        await broker.close()
