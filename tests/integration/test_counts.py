"""Status counts and the index's answers count each object once, however often it was
received or delivered."""

from __future__ import annotations

import asyncio

import pytest

from shared.index.connect import open_index
from shared.index.phi_index import InstanceRecord
from shared.ingest import fallback_key, object_key

pytestmark = pytest.mark.integration


def _record(sop: str) -> InstanceRecord:
    return InstanceRecord("1.2.3", sop, "2.25.1" + sop[-1], "1.2.3.4", "2.25.9", "123456-000001",
                          "1.2.840.10008.5.1.4.1.1.2", "CT", 10, "built-in", "0" * 64)


def test_receipts_quarantines_and_instances_are_counted_once(database_url: str) -> None:
    async def run() -> None:
        opened = await open_index(None, database_url, max_connections=2)
        index = opened.index
        try:
            first, second = object_key("1.2.3.4.5"), object_key("1.2.3.4.5")
            other = object_key("1.2.3.4.6")
            unreadable = [fallback_key(b"not DICOM"), fallback_key(b"not DICOM")]
            assert len({first, second, *unreadable}) == 4  # one key per receipt
            for key in (first, second, other, *unreadable):
                await index.record_received(key, "scp", "", 10)
            await index.record_received(first, "scp", "", 10)  # a redelivery
            assert await index.record_quarantined(unreadable[0], "ingest", "not-dicom", "x")
            assert not await index.record_quarantined(unreadable[0], "ingest", "not-dicom", "x")
            assert not await index.record_quarantined(unreadable[1], "ingest", "not-dicom", "x")
            assert await index.record_instances([_record("1.2.3.4.5"), _record("1.2.3.4.6")]
                                                ) == {"1.2.3.4.5", "1.2.3.4.6"}
            assert await index.record_instances([_record("1.2.3.4.5")]) == set()
            assert await index.record_instances([_record("1.2.3.4.7"), _record("1.2.3.4.7")]
                                                ) == {"1.2.3.4.7"}
            counts = await index.pipeline_counts()
            assert counts["received"] == 3  # two instances and one unreadable object
            assert counts["quarantined"] == 1
            assert counts["deidentified"] == 3
        finally:
            await opened.close()

    asyncio.run(run())


def test_objects_in_flight_are_recorded_together_and_counted_once(database_url: str) -> None:
    """Concurrent receipts and instance records go in as batches; an object in a batch twice
    (a redelivery racing the first delivery) is new for one of its callers only."""
    async def run() -> None:
        opened = await open_index(None, database_url, max_connections=2)
        index = opened.index
        try:
            keys = [object_key(f"1.2.3.9.{n}") for n in range(20)]
            await asyncio.gather(*(index.record_received(k, "scp", "AE", n)
                                   for n, k in enumerate(keys + keys[:5])))
            sops = [f"1.2.3.9.{n}" for n in range(20)]
            new = await asyncio.gather(*(index.record_instance(_record(s))
                                         for s in sops + sops[:3]))
            assert sum(new) == 20
            assert not any(await asyncio.gather(*(index.record_instance(_record(s))
                                                  for s in sops)))
            counts = await index.pipeline_counts()
            assert counts["received"] == 20
            assert counts["deidentified"] == 20
            async with opened.pool.acquire() as connection:
                sizes = await connection.fetch(
                    "SELECT key, size_bytes, calling_ae FROM received_object")
            assert {r["key"]: r["size_bytes"] for r in sizes} == {
                k: n for n, k in enumerate(keys)}
            assert {r["calling_ae"] for r in sizes} == {"AE"}
        finally:
            await opened.close()

    asyncio.run(run())
