"""The in-memory feature cache behind Redis outages (a cachetools LRU): bounded, the
least recently used user goes first, size 0 keeps nothing."""

from __future__ import annotations

from service.store.redis_store import FeatureCache


def record(i: int) -> dict[str, list[int]]:
    return {"hist_tags": [i]}


def test_the_least_recently_used_user_is_evicted_first() -> None:
    cache = FeatureCache(2)
    cache.put("a", record(1))
    cache.put("b", record(2))
    assert cache.get("a") == record(1)  # a is now the most recent
    cache.put("c", record(3))
    assert cache.get("b") is None and cache.get("a") == record(1) and cache.get("c") == record(3)
    assert len(cache) == 2
    cache.put("a", record(4))  # an update replaces, and does not grow the cache
    assert cache.get("a") == record(4) and len(cache) == 2
    cache.drop("a")
    cache.drop("never-seen")
    assert cache.get("a") is None and len(cache) == 1


def test_size_zero_keeps_nothing() -> None:
    cache = FeatureCache(0)
    cache.put("a", record(1))
    cache.drop("a")
    assert cache.get("a") is None and len(cache) == 0
