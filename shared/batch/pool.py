"""A pool of processes for work on many files, fed in chunks, largest files first."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from multiprocessing.pool import Pool
from typing import Any, TypeVar

from shared.batch.progress import Progress

T = TypeVar("T")
R = TypeVar("R")


def start_pool(
    jobs: int,
    *,
    start_method: str = "spawn",
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Pool:
    """``jobs`` processes. ``fork`` is cheap but only safe before any thread, event loop or
    connection exists in the parent; ``spawn`` is always safe. Falls back to ``spawn``
    where ``fork`` does not exist."""
    if start_method not in multiprocessing.get_all_start_methods():
        start_method = "spawn"
    context = multiprocessing.get_context(start_method)
    return context.Pool(max(1, jobs), initializer, initargs)


def map_chunks(
    pool: Pool | None,
    function: Callable[[list[T]], list[R]],
    items: Sequence[T],
    progress: Progress,
    *,
    chunk: int,
    sizes: Sequence[int] | None = None,
) -> list[R]:
    """``function`` over chunks of ``items``, in ``pool`` when there is one, else in this
    process. With ``sizes``, the largest items go first so the processes finish together.
    ``function`` returns one result per item of its chunk; the results come back in the
    order of ``items``, and ``progress`` advances as chunks finish."""
    order = list(range(len(items)))
    if sizes is not None:
        order.sort(key=lambda i: -sizes[i])
    chunks = [order[start : start + chunk] for start in range(0, len(order), max(1, chunk))]
    work = ([items[i] for i in part] for part in chunks)
    found = pool.imap(function, work) if pool is not None else map(function, work)
    results: dict[int, R] = {}
    for part, part_results in zip(chunks, found, strict=True):
        if len(part_results) != len(part):
            raise RuntimeError(
                f"{getattr(function, '__name__', 'a chunk function')} returned "
                f"{len(part_results)} results for {len(part)} items"
            )
        results.update(zip(part, part_results, strict=True))
        progress.advance(len(part_results))
    return [results[i] for i in range(len(items))]
