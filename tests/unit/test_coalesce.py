"""Writes of concurrent callers joined into batches (shared.index.coalesce)."""

from __future__ import annotations

import asyncio

import pytest

from shared.index.coalesce import Coalescer


async def staggered(coalescer: Coalescer[int, int], items: range) -> list[object]:
    """Submit the first item, and the others once its write is in flight."""
    first = asyncio.ensure_future(coalescer.submit(items[0]))
    await asyncio.sleep(0.002)
    rest = await asyncio.gather(*(coalescer.submit(n) for n in items[1:]),
                                return_exceptions=True)
    return list(await asyncio.gather(first, return_exceptions=True)) + rest


class Recorder:
    """A write that takes a little while and keeps the batches it was given."""

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on or set()

    async def write(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await asyncio.sleep(0.01)
        if self.fail_on & set(items):
            raise OSError("the database went away")
        return [item * 10 for item in items]


def test_the_first_item_is_written_alone_and_the_rest_join_the_next_write() -> None:
    async def run() -> tuple[list[object], list[list[int]]]:
        recorder = Recorder()
        coalescer = Coalescer(recorder.write)
        results = await staggered(coalescer, range(6))
        return results, recorder.batches

    results, batches = asyncio.run(run())
    assert results == [0, 10, 20, 30, 40, 50]  # each caller gets its own item's result
    assert batches == [[0], [1, 2, 3, 4, 5]]


def test_batches_are_bounded() -> None:
    async def run() -> list[list[int]]:
        recorder = Recorder()
        coalescer = Coalescer(recorder.write, max_batch=2)
        await staggered(coalescer, range(5))
        return recorder.batches

    assert asyncio.run(run()) == [[0], [1, 2], [3, 4]]


def test_a_failed_write_fails_its_callers_only_and_later_writes_go_on() -> None:
    async def run() -> tuple[list[object], list[list[int]], int]:
        recorder = Recorder(fail_on={2})
        coalescer = Coalescer(recorder.write)
        results = await staggered(coalescer, range(4))
        after = await coalescer.submit(7)
        return results, recorder.batches, after

    results, batches, after = asyncio.run(run())
    assert batches[:2] == [[0], [1, 2, 3]]
    assert results[0] == 0
    assert all(isinstance(r, OSError) for r in results[1:])
    assert after == 70


def test_a_cancelled_caller_leaves_its_item_in_the_write() -> None:
    async def run() -> list[list[int]]:
        recorder = Recorder()
        coalescer = Coalescer(recorder.write)
        first = asyncio.ensure_future(coalescer.submit(1))
        await asyncio.sleep(0.002)
        second = asyncio.ensure_future(coalescer.submit(2))
        await asyncio.sleep(0)
        second.cancel()
        await first
        with pytest.raises(asyncio.CancelledError):
            await second
        await coalescer.close()
        return recorder.batches

    assert asyncio.run(run()) == [[1], [2]]


def test_a_coalescer_kept_across_event_loops_starts_afresh() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.write)
    assert asyncio.run(coalescer.submit(1)) == 10
    assert asyncio.run(coalescer.submit(2)) == 20
