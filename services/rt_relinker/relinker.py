"""Handling one message of the relink queue: take the de-identified object's node (sent
by the anonymizer worker, which read it from the stored bytes; else read from the object
itself), record it in the graph of its study, bring the study's set status up to date.

The check runs on the de-identified objects, so a complete set proves that
de-identification kept every link. Objects arrive in any order and from many workers; a
set's status is updated whenever one of its objects arrives, late ones included, by the
incremental check of :mod:`shared.rt.set_state` (an arrival costs the same in a study of
any size; the status is the full check's of every object recorded so far).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from shared.dicom.errors import RejectedObject
from shared.dicom.parse import parse
from shared.messaging import Message
from shared.observability.logging import correlation, log_fields
from shared.observability.metrics import RT_SET_CHECKS
from shared.rt.graph import ObjectNode, node_from_data, node_of
from shared.rt.store import record_and_check
from shared.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)


def _node(data: bytes) -> ObjectNode:
    return node_of(parse(data))


def _sent_node(data: object) -> ObjectNode | None:
    """The node the anonymizer worker read from the stored object and sent with its
    announcement; None when there is none (a large node, a re-announcement after recovery)
    or it is malformed: the object is then read from the store."""
    if data is None:
        return None
    try:
        return node_from_data(data)
    except (ValueError, TypeError):
        log.warning("relink message with an unreadable node: the object is read instead")
        return None


class RtRelinker:
    """The message handler; safe to run in many processes at once."""

    def __init__(self, store: ObjectStore, pool: asyncpg.Pool, bucket: str) -> None:
        self.store = store
        self.pool = pool
        self.bucket = bucket  # the de-identified bucket: the only one it reads

    async def handle(self, message: Message) -> None:
        key = str(message.body["key"])
        bucket = str(message.body["bucket"])
        with correlation(message.correlation_id):
            if bucket != self.bucket:
                # Never read another bucket: the incoming one holds PHI, whose original
                # UIDs would enter the graph. Refused and acknowledged; no name is logged.
                log.warning("message refused: it names a bucket other than the de-identified"
                            " one", extra=log_fields(delivery=message.delivery_count))
                return
            node = _sent_node(message.body.get("node"))
            if node is None:
                try:
                    data = await self.store.get(bucket, key)
                except ObjectNotFound:
                    log.warning("de-identified object not found", extra=log_fields(key=key))
                    return
                try:
                    # CPU work: off the event loop, like the anonymizer worker's engine.
                    node = await asyncio.to_thread(_node, data)
                except RejectedObject as exc:  # cannot happen for our own output; keep going
                    log.error("unreadable de-identified object", extra=log_fields(
                        key=key, reason_code=exc.code))
                    return
            status = await record_and_check(self.pool, node, key)
            RT_SET_CHECKS.labels(kind=status.kind, status=status.status).inc()
            log.info("set checked", extra=log_fields(
                study=status.study_uid, status=status.status, objects=status.objects,
                problems=status.problem_count))
