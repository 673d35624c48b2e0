"""Writes of many concurrent callers joined into one statement: group commit for the index.

A worker has several objects in flight and each would write its rows in a round trip and a
commit of its own. :class:`Coalescer` writes the first caller's item at once and gathers
what arrives while that write is in flight into the next write, so an idle index adds no
delay and a busy one pays one round trip, one pool checkout and one commit per batch
instead of per object. Every caller waits for the write that holds its item and gets its
item's result, or the write's exception: a failed batch fails each of its callers, who
retry as they would have alone (the writes are idempotent). A caller that is cancelled
leaves its item in the batch, which is written all the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failure as seen: the caller waiting for it may have been cancelled."""
    if not future.cancelled():
        future.exception()


class Coalescer(Generic[T, R]):
    """Calls ``write`` with the items submitted while the previous call ran, at most
    ``max_batch`` at a time, one call at a time; ``write`` returns one result per item,
    in order."""

    def __init__(
        self, write: Callable[[list[T]], Awaitable[list[R]]], max_batch: int = 256
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: T) -> R:
        """Write ``item`` with the next batch; its result."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or an index kept across event loops
            self._loop, self._writer, self._pending = loop, None, []
        future: asyncio.Future[R] = loop.create_future()
        future.add_done_callback(_retrieve)
        self._pending.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain())
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._write([item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:  # cancelled or exiting: nothing more is written
                for _, future in batch + self._pending:
                    future.cancel()
                self._pending.clear()
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        """Wait for the writes in flight."""
        if self._writer is not None and not self._writer.done():
            await asyncio.gather(self._writer, return_exceptions=True)
