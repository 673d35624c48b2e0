"""The bounded caches of long-running processes."""

from __future__ import annotations

import pytest

from shared.index.cache import LruCache


def test_the_least_recently_used_entry_is_forgotten_first() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache["a"] = 1
    cache["b"] = 2
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache["c"] = 3
    assert len(cache) == 2
    assert "b" not in cache and cache.get("b") is None
    assert cache.get("a") == 1 and cache.get("c") == 3


def test_a_cache_never_grows_beyond_its_size() -> None:
    cache: LruCache[int, int] = LruCache(100)
    for n in range(10_000):
        cache[n] = n
    assert len(cache) == 100
    assert cache.get(9_999) == 9_999 and cache.get(0) is None
    with pytest.raises(ValueError):
        LruCache(0)
