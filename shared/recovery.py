"""Getting work back after a stop or a failure: objects received but never processed,
and messages in the dead-letter queue.

A received object is *processed* once its result is durable: an instance record in the
index (de-identified, stored, recorded) or a quarantine record. :func:`announce_unprocessed`
announces again every object of the incoming bucket that is neither (``anon serve`` runs
it at start, because its in-process queues do not survive the process; a deployed worker
may run it too). Announcing an object twice is harmless: the worker is idempotent.
:func:`redrive` moves dead letters back to their queue.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

from shared.config import Settings
from shared.dicom.errors import RejectedObject
from shared.dicom.parse import parse
from shared.index.phi_index import PhiIndex
from shared.messaging import Broker, RabbitBroker
from shared.messaging.topology import ANONYMIZE, DEAD_LETTER
from shared.runtime import topology_from
from shared.storage import Buckets, ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

# Keys the ingest gives received objects: sha256(SOP Instance UID), then a receipt suffix
# (shared.ingest.object_key).
_RECEIVED_KEY = re.compile(r"[0-9a-f]{2}/(?P<digest>[0-9a-f]{64})\.[0-9a-f]+\.dcm")
_BATCH = 1000


class RedriveUnavailable(Exception):
    """Dead letters cannot be moved from here (no broker configured)."""


@dataclass(frozen=True)
class Backlog:
    """What :func:`unprocessed_keys` found in the incoming bucket."""

    incoming: int
    processed: list[str]
    unprocessed: list[str]


async def _instance_digests(index: PhiIndex, digests: list[str]) -> set[str]:
    """The digests (sha256 of the original SOP Instance UID) that have an instance record."""
    async with index.pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT uid_digest(original_sop_instance_uid) AS d FROM instance"
            " WHERE uid_digest(original_sop_instance_uid) = ANY($1::text[])",
            digests,
        )
    return {row["d"] for row in rows}


async def _quarantined(index: PhiIndex, keys: list[str]) -> set[str]:
    async with index.pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT key FROM quarantined_object WHERE key = ANY($1::text[])", keys)
    return {row["key"] for row in rows}


async def _uid_digest(store: ObjectStore, bucket: str, key: str) -> str | None:
    """The digest of an object's SOP Instance UID, from its key or else from its content."""
    match = _RECEIVED_KEY.fullmatch(key)
    if match is not None:
        return match["digest"]
    try:
        obj = parse(await store.get(bucket, key))
    except (ObjectNotFound, RejectedObject):
        return None
    uid = obj.get_text(0x00080018) or ""
    return hashlib.sha256(uid.encode("ascii", "replace")).hexdigest() if uid else None


async def unprocessed_keys(store: ObjectStore, buckets: Buckets, index: PhiIndex) -> Backlog:
    """Sort the incoming bucket into processed and unprocessed objects (see the module)."""
    keys = await store.list_keys(buckets.incoming)
    processed: list[str] = []
    unprocessed: list[str] = []
    for start in range(0, len(keys), _BATCH):
        batch = keys[start:start + _BATCH]
        quarantined = await _quarantined(index, batch)
        digests = {key: await _uid_digest(store, buckets.incoming, key)
                   for key in batch if key not in quarantined}
        recorded = await _instance_digests(index, [d for d in digests.values() if d])
        for key in batch:
            if key in quarantined or digests.get(key) in recorded:
                processed.append(key)
            else:
                unprocessed.append(key)
    return Backlog(len(keys), processed, unprocessed)


async def announce_unprocessed(
    store: ObjectStore, buckets: Buckets, broker: Broker, index: PhiIndex
) -> Backlog:
    """Announce on the anonymize queue every incoming object that was not processed."""
    backlog = await unprocessed_keys(store, buckets, index)
    for key in backlog.unprocessed:
        await broker.publish(
            ANONYMIZE, {"bucket": buckets.incoming, "key": key, "source": "recovered"},
            correlation_id=key.rsplit("/", 1)[-1][:16],
        )
    if backlog.unprocessed:
        log.warning("announced %d received objects again that were not processed",
                    len(backlog.unprocessed))
    return backlog


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
