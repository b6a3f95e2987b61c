"""Bounded in-process copies of what Redis served recently: users' feature records and
their profiles. They are the service's memory while Redis is unreachable, so a known user
still gets their own profile during an outage (marked ``source: "memory"``)."""

from __future__ import annotations

from typing import Generic, TypeVar

from cachetools import LRUCache

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A dict that forgets its least recently used entries beyond ``size`` (0: keeps
    nothing): a ``cachetools.LRUCache``. Only the event loop touches it, so it needs no
    lock."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: LRUCache[K, V] | None = LRUCache(size) if size > 0 else None

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)

    def get(self, key: K) -> V | None:
        """The value (now the most recently used), or None."""
        return None if self._items is None else self._items.get(key)

    def put(self, key: K, value: V) -> None:
        if self._items is not None:
            self._items[key] = value

    def drop(self, key: K) -> None:
        if self._items is not None:
            self._items.pop(key, None)


class ProfileMemory:
    """The last profile served to each recent user, per model version (one entry per
    user: a newer version replaces it)."""

    def __init__(self, size: int) -> None:
        self._lru: LRU[str, tuple[str, bytes]] = LRU(size)

    def __len__(self) -> int:
        return len(self._lru)

    def put(self, model_version: str, user_id: str, blob: bytes) -> None:
        self._lru.put(user_id, (model_version, blob))

    def get(self, model_version: str, user_id: str) -> bytes | None:
        entry = self._lru.get(user_id)
        return entry[1] if entry is not None and entry[0] == model_version else None

    def drop(self, user_id: str) -> None:
        self._lru.drop(user_id)
