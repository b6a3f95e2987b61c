"""The Redis key layout (DESIGN.md §6), in one place so every reader and writer agrees."""

from __future__ import annotations

import re
from dataclasses import dataclass

SAFE_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
"""Client-chosen ids (users, events): a safe charset (no spaces, slashes or glob
characters) and bounded length, since they end up in Redis keys."""
USER_ID_PATTERN = SAFE_ID_PATTERN

_USER_ID = re.compile(USER_ID_PATTERN)


def valid_user_id(user_id: str) -> bool:
    return bool(_USER_ID.match(user_id))


@dataclass(frozen=True)
class Keys:
    """Keys under one prefix (default ``tp:``)."""

    prefix: str = "tp:"

    def features(self, user_id: str) -> str:
        """Hash of a user's features: one field per model input, JSON list values."""
        return f"{self.prefix}feat:user:{user_id}"

    @property
    def features_pattern(self) -> str:
        return f"{self.prefix}feat:user:*"

    def user_of_features_key(self, key: str) -> str:
        return key[len(self.prefix) + len("feat:user:") :]

    def profile(self, model_version: str, user_id: str) -> str:
        """A user's cached top-``max_k`` profile under one model version."""
        return f"{self.prefix}profile:{model_version}:{user_id}"

    def themes(self, model_version: str) -> str:
        """The theme catalogue loaded with a bundle (``themes.json`` bytes)."""
        return f"{self.prefix}themes:{model_version}"

    def precompute_done(self, model_version: str) -> str:
        """Set of the feature shards (by content hash) whose profiles of ``model_version``
        ``precompute --engine ray`` has written: a rerun skips them."""
        return f"{self.prefix}precompute:{model_version}:done"
