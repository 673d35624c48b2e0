"""The anonymizer worker sends the relinker the node of each stored object, read from the
stored bytes, so the relinker checks a set without fetching its objects again; without a
node, or with a malformed one, the relinker reads the object as before."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from services.rt_relinker.relinker import RtRelinker
from shared.dicom.parse import parse
from shared.index.connect import open_index
from shared.messaging import Message
from shared.messaging.topology import RELINK
from shared.rt.graph import node_from_data, node_of
from shared.rt.store import set_status
from shared.storage import Buckets, LocalStore
from tests import synth
from tests.helpers import local_worker

pytestmark = pytest.mark.integration


async def _deidentify_set(root: Path, url: str) -> tuple[LocalStore, Buckets,
                                                         list[dict[str, Any]], str]:
    """De-identify a synthetic RT set through the worker; the relink announcements, and the
    pseudonymous study UID."""
    rt = synth.make_rt_set(n_ct=6, n_rois=2, n_beams=1, rows=8, cols=8)
    worker, store, buckets, (opened, broker) = await local_worker(root, url)
    announced: list[dict[str, Any]] = []

    async def keep(message: Message) -> None:
        announced.append(dict(message.body))

    try:
        consumer = await broker.consume(RELINK, keep)
        for n, ds in enumerate(rt.all()):
            synth.write(ds, root / f"{n}.dcm")
            await store.put(buckets.incoming, f"in/{n}.dcm", (root / f"{n}.dcm").read_bytes())
            await worker.handle(Message({"bucket": buckets.incoming, "key": f"in/{n}.dcm"},
                                        "c0ffee", 1, "anonymize"))
        while len(announced) < len(rt.all()):
            await asyncio.sleep(0.01)
        await consumer.cancel()
    finally:
        await broker.close()
        await opened.close()
    return store, buckets, announced, str(announced[0]["study"])


async def _relink(store: LocalStore, bucket: str, url: str, bodies: list[dict[str, Any]],
                  study: str) -> tuple[str, int]:
    opened = await open_index(None, url, max_connections=2)
    try:
        relinker = RtRelinker(store, opened.pool, bucket)
        for body in bodies:
            await relinker.handle(Message(body, "c0ffee", 1, "relink"))
        status = await set_status(opened.pool, study)
        assert status is not None
        return status.status, status.objects
    finally:
        await opened.close()


def test_the_relinker_checks_a_set_from_the_sent_nodes_without_reading_it(
    tmp_path: Path, database_url: str
) -> None:
    async def run() -> None:
        store, buckets, announced, study = await _deidentify_set(tmp_path, database_url)
        for body in announced:
            stored = node_of(parse(await store.get(buckets.deidentified, body["key"])))
            assert stored.patient_name  # the object has one; the message does not
            assert body["node"] == {**asdict(replace(stored, patient_name="")),
                                    "references": [asdict(r) for r in stored.references]}
            assert stored.references or stored.modality == "CT"
            assert node_from_data(body["node"]).sop_instance_uid == body["instance"]
        # Gone from the store: only the nodes can make the set complete.
        await store.delete_many(buckets.deidentified, [b["key"] for b in announced])
        assert await _relink(store, buckets.deidentified, database_url, announced,
                             study) == ("complete", len(announced))

    asyncio.run(run())


def test_without_a_node_or_with_a_malformed_one_the_relinker_reads_the_object(
    tmp_path: Path, database_url: str
) -> None:
    async def run() -> None:
        store, buckets, announced, study = await _deidentify_set(tmp_path, database_url)
        bodies = [{"bucket": b["bucket"], "key": b["key"]} for b in announced[:3]]
        bodies += [{**b, "node": {"sop_instance_uid": 7}} for b in announced[3:-1]]
        bodies += [{**announced[-1], "node": {**announced[-1]["node"], "extra": ""}}]
        assert await _relink(store, buckets.deidentified, database_url, bodies,
                             study) == ("complete", len(announced))

    asyncio.run(run())


@pytest.mark.parametrize("data", [
    None, [], {"sop_instance_uid": "1"},
    {"sop_instance_uid": "1", "sop_class_uid": "2", "modality": "CT", "study_uid": "3",
     "series_uid": "4", "patient_id": "p", "patient_name": "", "frame_of_reference_uid": 5,
     "references": []},
    {"sop_instance_uid": "1", "sop_class_uid": "2", "modality": "CT", "study_uid": "3",
     "series_uid": "4", "patient_id": "p", "patient_name": "", "frame_of_reference_uid": None,
     "references": [{"kind": "k", "uid": "u", "path": "p", "target": "instance"}]},
])
def test_a_malformed_node_is_refused(data: object) -> None:
    with pytest.raises(ValueError):
        node_from_data(data)
