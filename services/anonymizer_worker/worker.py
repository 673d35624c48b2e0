"""Handling one message of the anonymize queue.

Fetch the received object, filter and de-identify it (built-in profile or site script),
store the result in the de-identified bucket under patient / study / series / instance,
record it in the index, announce it on the relink queue, and only then acknowledge.
Refused objects go to the quarantine bucket with their reason and are acknowledged; any
other failure sends the message back after a delay that grows with each delivery (while the
database or the object store is down, consumers pause instead and nothing is counted), and
after a bounded number of deliveries the broker moves it to the dead-letter queue. Once the
result is durable the received object (PHI) is deleted, or kept for the retention period.
Redelivery is harmless: the output key and bytes are the same, and the index counts an
instance it already holds once. A running system's pseudonymizer follows the script and
filter in force in the index (``shared.deid.live``): each message is de-identified, and
its instance recorded, with the rules in force when it started.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, replace

from shared.deid.live import LivePseudonymizer
from shared.deid.pseudonymizer import OFFLOAD_BYTES, Pseudonymizer
from shared.dicom.errors import RejectedObject
from shared.dicom.parse import parse
from shared.index.coalesce import Coalescer
from shared.messaging import Broker, Message
from shared.messaging.topology import RELINK
from shared.observability.logging import correlation, log_fields
from shared.observability.metrics import DEIDENTIFIED, DEIDENTIFY_SECONDS, QUARANTINED
from shared.rt.graph import node_of
from shared.storage import Buckets, ObjectNotFound, ObjectStore
from shared.storage.keys import UnsafePath, safe_key

log = logging.getLogger(__name__)

# A node with more references than this (a structure set of thousands of contours) is not
# sent in the relink message; the relinker reads such an object itself.
MAX_NODE_REFERENCES = 2_000


def output_key(patient_id: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """``<patient>/<study>/<series>/<instance>.dcm``, each part made safe (a value that is
    not a plain name, e.g. a retained UID with ``/`` or ``..``, becomes its digest name)."""
    return safe_key(patient_id or "unknown", study_uid, series_uid, sop_uid, suffix=".dcm")


class AnonymizerWorker:
    """The message handler; one instance serves any number of concurrent consumers."""

    def __init__(
        self,
        store: ObjectStore,
        buckets: Buckets,
        broker: Broker,
        pseudonymizer: Pseudonymizer | LivePseudonymizer,
        *,
        keep_received: bool = False,
    ) -> None:
        self.store = store
        self.buckets = buckets
        self.broker = broker
        self.pseudonymizer = pseudonymizer
        # False: a received object (PHI) is deleted as soon as its result is durable;
        # True: kept for INCOMING_RETENTION_DAYS, then deleted by the sweep.
        self.keep_received = keep_received
        # The received copies of the objects in flight go in one request (DeleteObjects).
        self._deletions: Coalescer[str, None] = Coalescer(self._delete_batch)

    async def handle(self, message: Message) -> None:
        key = str(message.body["key"])
        bucket = str(message.body.get("bucket") or self.buckets.incoming)
        with correlation(message.correlation_id):
            if bucket != self.buckets.incoming:
                # Only received objects are de-identified: a message naming another bucket
                # (the de-identified or quarantine bucket, or one of another deployment) is
                # refused and acknowledged, never read. Neither name is logged.
                log.warning("message refused: it names a bucket other than the incoming one",
                            extra=log_fields(delivery=message.delivery_count))
                return
            started = time.perf_counter()
            try:
                data = await self.store.get(bucket, key)
            except ObjectNotFound:
                # Announced but gone: an ingest that was rolled back. Nothing to do.
                log.warning("announced object not found", extra=log_fields(key=key))
                return
            index = self.pseudonymizer.index
            await index.record_received(key, str(message.body.get("source", "")), "", len(data))
            try:
                # An operator released this one object knowingly (anon quarantine release).
                accept = message.body.get("accept_burned_in_annotation") is True
                result, record = await self.pseudonymizer.prepare(
                    data, accept_burned_in_annotation=accept)
            except RejectedObject as exc:
                await self._quarantine(key, data, exc)
                return
            target = output_key(result.patient_id, result.study_instance_uid,
                                result.series_instance_uid, result.sop_instance_uid)
            try:
                await self.store.put(self.buckets.deidentified, target, result.data)
            except UnsafePath as exc:  # the store found the key leads outside the bucket
                await self._quarantine(key, data, exc)
                return
            announcement: dict[str, object] = {
                "bucket": self.buckets.deidentified, "key": target,
                "study": result.study_instance_uid, "series": result.series_instance_uid,
                "instance": result.sop_instance_uid, "sop_class": result.sop_class_uid,
                "modality": result.modality}
            node = await self._node(result.data)
            if node is not None:
                announcement["node"] = node
            new = await index.record_instance(replace(record, object_key=target))
            await self.broker.publish(RELINK, announcement,
                                      correlation_id=message.correlation_id)
            if new:  # a duplicate changes no count
                DEIDENTIFIED.inc()
            DEIDENTIFY_SECONDS.observe(time.perf_counter() - started)
            log.info("de-identified", extra=log_fields(key=key, delivery=message.delivery_count))
            await self._delete_received(key)

    async def _quarantine(self, key: str, data: bytes, exc: RejectedObject) -> None:
        await self.store.put(self.buckets.quarantine, key, data,
                             {"stage": "deidentify", "reason-code": exc.code,
                              "reason": exc.reason})
        if await self.pseudonymizer.index.record_quarantined(key, "deidentify", exc.code,
                                                             exc.reason):
            QUARANTINED.labels(stage="deidentify", reason_code=exc.code).inc()
        log.info("quarantined", extra=log_fields(key=key, reason_code=exc.code))
        await self._delete_received(key)

    async def _delete_received(self, key: str) -> None:
        """The result is durable (stored, recorded, announced): the received copy goes."""
        if self.keep_received:
            return
        try:
            await self._deletions.submit(key)
        except Exception as exc:  # the retention sweep deletes it later
            log.warning("received object not deleted",
                        extra=log_fields(key=key, error=type(exc).__name__))

    async def _delete_batch(self, keys: list[str]) -> list[None]:
        await self.store.delete_many(self.buckets.incoming, keys)
        return [None] * len(keys)

    @staticmethod
    async def _node(data: bytes) -> dict[str, object] | None:
        """The relink graph's node of the stored result, read from its bytes, so the
        relinker need not fetch and parse it again; None when the node is too large for a
        message (the relinker then reads the object)."""
        try:
            if len(data) >= OFFLOAD_BYTES:
                node = await asyncio.to_thread(lambda: node_of(parse(data)))
            else:
                node = node_of(parse(data))
        except RejectedObject:  # not for our own output; the relinker says so if it is
            return None
        if len(node.references) > MAX_NODE_REFERENCES:
            return None
        # The relinker's checks never use the name; a script that keeps it would otherwise
        # put it in a message (the ID is in the object's key already).
        sent = asdict(replace(node, patient_name=""))
        sent["references"] = list(sent["references"])  # as JSON gives it back
        return sent
