"""rt-relinker under concurrent arrivals of one study: several relinkers, each with its own
pool as separate processes would have, handle the objects of one RT set at once, in a
shuffled order and with redeliveries; the set ends recorded once and complete."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from services.rt_relinker.relinker import RtRelinker
from shared.index.connect import open_index
from shared.messaging import Message
from shared.rt.store import set_status
from shared.storage import Buckets, LocalStore
from tests import synth

pytestmark = pytest.mark.integration

RELINKERS = 3
PREFETCH = 4  # deliveries each relinker handles at once, as with prefetch > 1


async def _relink_concurrently(store: LocalStore, url: str, keys: list[str],
                               bucket: str) -> None:
    opened = [await open_index(None, url, max_connections=PREFETCH)
              for _ in range(RELINKERS)]
    try:
        relinkers = [RtRelinker(store, o.pool, bucket) for o in opened]
        queue: asyncio.Queue[str] = asyncio.Queue()
        for key in keys:
            queue.put_nowait(key)

        async def consume(relinker: RtRelinker) -> None:
            while not queue.empty():
                key = queue.get_nowait()
                await relinker.handle(Message({"bucket": bucket, "key": key}, "c0ffee", 1,
                                              "relink"))

        await asyncio.gather(*(consume(r) for r in relinkers for _ in range(PREFETCH)))
    finally:
        for o in opened:
            await o.close()


def test_concurrent_arrivals_of_one_study_end_complete(tmp_path: Path,
                                                       database_url: str) -> None:
    rt = synth.make_rt_set(n_ct=40, n_rois=2, n_beams=1, rows=8, cols=8)
    objects = rt.all()
    study = str(rt.ct[0].StudyInstanceUID)

    async def run() -> tuple[str, int, int, int]:
        buckets = Buckets()
        store = LocalStore(tmp_path / "objects", fsync=False)
        await store.ensure_buckets([buckets.deidentified])
        keys = []
        for n, ds in enumerate(objects):
            # Synthetic objects stand for de-identified ones: the relinker reads references.
            path = tmp_path / f"{n:03d}.dcm"
            synth.write(ds, path)
            keys.append(f"set/{n:03d}.dcm")
            await store.put(buckets.deidentified, keys[-1], path.read_bytes())
        order = keys + random.Random(3).sample(keys, 10)  # ten redelivered
        random.Random(11).shuffle(order)
        await _relink_concurrently(store, database_url, order, buckets.deidentified)
        opened = await open_index(None, database_url, max_connections=1)
        try:
            status = await set_status(opened.pool, study)
            async with opened.pool.acquire() as connection:
                recorded = int(await connection.fetchval("SELECT count(*) FROM rt_object"))
            assert status is not None
            return status.status, status.objects, len(status.problems), recorded
        finally:
            await opened.close()

    assert asyncio.run(run()) == ("complete", len(objects), 0, len(objects))
