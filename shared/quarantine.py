"""What operators do with quarantined objects: list them, send one back through the
pipeline, purge them.

A quarantined object has a copy in the quarantine bucket (PHI) and a record in the index
(key, stage, reason code, reason, date; keys are hashes, so a listing holds no PHI).

:func:`release` copies the object back to the incoming bucket under
``released/<key>``, removes the quarantine record and copy, then announces it on the
anonymize queue when a broker is given (the deployed system). Without one (``anon serve``'s
queues live in its process) :func:`announce_released`, which ``anon serve`` runs every few
seconds and at start, announces it. The record and copy go before the announcement so
that a worker refusing the object again records a fresh quarantine that the release
cannot remove; if the announcement fails, the quarantine is put back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.config import Settings
from shared.index.connect import OpenIndex, open_index
from shared.index.phi_index import PhiIndex
from shared.messaging import Broker, RabbitBroker
from shared.messaging.topology import ANONYMIZE
from shared.recovery import ACCEPT_METADATA, announcement, unprocessed_keys
from shared.runtime import buckets as buckets_of
from shared.runtime import topology_from
from shared.storage import Buckets, ObjectNotFound, ObjectStore, open_store

log = logging.getLogger(__name__)

RELEASED_PREFIX = "released/"


class NotQuarantined(Exception):
    """No quarantined object has this key (the message names the key only: a hash)."""


@dataclass(frozen=True)
class QuarantineEntry:
    key: str
    stage: str
    reason_code: str
    reason: str
    quarantined_at: datetime


async def list_quarantined(
    index: PhiIndex, older_than_days: float | None = None
) -> list[QuarantineEntry]:
    """Every quarantine record, oldest first (only those older than the given days)."""
    limit = _limit(older_than_days)
    async with index.pool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT key, stage, reason_code, reason, quarantined_at FROM quarantined_object"
            " WHERE $1::timestamptz IS NULL OR quarantined_at <= $1"
            " ORDER BY quarantined_at, key",
            limit,
        )
    return [QuarantineEntry(r["key"], r["stage"], r["reason_code"], r["reason"],
                            r["quarantined_at"]) for r in rows]


def _limit(older_than_days: float | None) -> datetime | None:
    if older_than_days is None:
        return None
    if older_than_days < 0:
        raise ValueError("older than a negative number of days")
    return datetime.now(UTC) - timedelta(days=older_than_days)


def released_key(key: str) -> str:
    """The incoming key of a released object."""
    return key if key.startswith(RELEASED_PREFIX) else RELEASED_PREFIX + key


async def release(
    store: ObjectStore, buckets: Buckets, index: PhiIndex, broker: Broker | None, key: str,
    *, accept_burned_in_annotation: bool = False,
) -> str:
    """Send a quarantined object back through the pipeline (see the module); its new
    incoming key. ``accept_burned_in_annotation``: the operator accepts this object's
    burned-in annotation knowingly (recorded with its instance). NotQuarantined when there
    is no record or no copy of it."""
    async with index.pool.acquire() as connection:
        row = await connection.fetchrow(
            "SELECT key, stage, reason_code, reason, quarantined_at FROM quarantined_object"
            " WHERE key = $1", key)
    if row is None:
        raise NotQuarantined(f"no quarantined object {key}")
    target = released_key(key)
    with tempfile.TemporaryDirectory(prefix="release-") as folder:
        copy = Path(folder) / "object.dcm"
        try:
            await store.get_file(buckets.quarantine, key, copy)
            metadata = await store.metadata(buckets.quarantine, key)
        except ObjectNotFound:
            raise NotQuarantined(f"the quarantine copy of {key} is missing") from None
        received = {"source": "release"}
        if accept_burned_in_annotation:
            received[ACCEPT_METADATA] = "true"
        await store.put_file(buckets.incoming, target, copy, received)
        async with index.pool.acquire() as connection:
            await connection.execute("DELETE FROM quarantined_object WHERE key = $1", key)
        await store.delete(buckets.quarantine, key)
        if broker is None:
            return target
        try:
            await broker.publish(
                ANONYMIZE, await announcement(store, buckets, target, "release"),
                correlation_id=target.rsplit("/", 1)[-1][:16])
        except Exception:
            # Not announced: put the quarantine back as it was.
            await store.put_file(buckets.quarantine, key, copy, metadata)
            async with index.pool.acquire() as connection:
                await connection.execute(
                    "INSERT INTO quarantined_object (key, stage, reason_code, reason,"
                    " quarantined_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    row["key"], row["stage"], row["reason_code"], row["reason"],
                    row["quarantined_at"])
            await store.delete(buckets.incoming, target)
            raise
    log.info("released from quarantine")
    return target


async def purge(
    store: ObjectStore, buckets: Buckets, index: PhiIndex, older_than_days: float | None = None
) -> int:
    """Delete quarantined objects (copy, then record), all or those older than the given
    days; the number purged. Without a limit, copies that have no record go too."""
    entries = await list_quarantined(index, older_than_days)
    for entry in entries:
        await store.delete(buckets.quarantine, entry.key)
        async with index.pool.acquire() as connection:
            await connection.execute("DELETE FROM quarantined_object WHERE key = $1", entry.key)
    purged = len(entries)
    if older_than_days is None:
        for key in await store.list_keys(buckets.quarantine):
            await store.delete(buckets.quarantine, key)
            purged += 1
    return purged


def purge_folders(data_dir: Path, older_than_days: float | None = None) -> int:
    """Delete the quarantine folders ``anon deidentify`` leaves in ``DATA_DIR/quarantine``
    (copies of rejected files, PHI), all or those last written more than the given days
    ago; the number deleted."""
    root = data_dir / "quarantine"
    limit = _limit(older_than_days)
    removed = 0
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or folder.is_symlink():
            continue
        written = datetime.fromtimestamp(folder.stat().st_mtime, UTC)
        if limit is None or written <= limit:
            shutil.rmtree(folder)
            removed += 1
    return removed


async def announce_released(
    store: ObjectStore, buckets: Buckets, broker: Broker, index: PhiIndex, announced: set[str]
) -> int:
    """Announce the released objects waiting in the incoming bucket that are not in
    ``announced`` (which is updated) and have no result yet; the number announced."""
    if not await store.list_keys(buckets.incoming, RELEASED_PREFIX):
        return 0
    backlog = await unprocessed_keys(store, buckets, index, RELEASED_PREFIX)
    new = [key for key in backlog.unprocessed if key not in announced]
    for key in new:
        await broker.publish(
            ANONYMIZE, await announcement(store, buckets, key, "release"),
            correlation_id=key.rsplit("/", 1)[-1][:16])
        announced.add(key)
    return len(new)


async def watch_released(
    store: ObjectStore, buckets: Buckets, broker: Broker, index: PhiIndex,
    announced: set[str], interval: float = 5.0,
) -> None:
    """Run :func:`announce_released` every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await announce_released(store, buckets, broker, index, announced)
        except Exception as exc:
            log.warning("released objects not announced (%s); trying again",
                        type(exc).__name__)


@dataclass
class Operator:
    """The index, object store and (deployed) broker an operator command works on."""

    opened: OpenIndex
    store: ObjectStore
    buckets: Buckets
    broker: Broker | None

    @property
    def index(self) -> PhiIndex:
        return self.opened.index


@contextlib.asynccontextmanager
async def operator(settings: Settings) -> AsyncIterator[Operator]:
    """The system of the settings: the data folder (embedded index and objects) unless
    DATABASE_URL, S3_ENDPOINT and AMQP_URL point at the deployed backends."""
    opened = await open_index(None if settings.database_url else settings.data_dir,
                              settings.database_url, max_connections=2)
    store = open_store(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key,
                       settings.s3_secure, settings.data_dir / "objects")
    broker: Broker | None = None
    try:
        names = buckets_of(settings)
        await store.ensure_buckets(names.all())
        if settings.amqp_url:
            broker = RabbitBroker(settings.amqp_url, topology_from(settings))
            await broker.connect()
        yield Operator(opened, store, names, broker)
    finally:
        if broker is not None:
            await broker.close()
        await store.close()
        await opened.close()
