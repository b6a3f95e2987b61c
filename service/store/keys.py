"""The Redis key layout (DESIGN.md §6), in one place so every reader and writer agrees.

Redis Cluster places a key by the CRC16 of its name, or of the part between the first
``{`` and the next ``}`` (a *hash tag*) when there is one. Per-user and per-request keys
have no tag, so they spread over every slot (and master); the keys of one experiment's
A/B log share the tag ``{experiment}``, because one Lua script updates several of them
at once and a script's keys must all live in one slot. Nothing else is multi-key. So that
no other part of a key can become a tag, ids that reach keys exclude braces
(:data:`SAFE_ID_PATTERN`, experiment names) and so must the prefix (:func:`check_prefix`).
"""

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


def check_prefix(prefix: str) -> str:
    """A key prefix without ``{`` or ``}``: a hash tag in the prefix would put every key
    in one slot of a Redis Cluster (one master holding everything)."""
    if "{" in prefix or "}" in prefix:
        raise ValueError(
            f"key prefix {prefix!r} must not contain '{{' or '}}' (a Redis Cluster hash tag "
            "there would put every key on one master)"
        )
    return prefix


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

    @property
    def serving(self) -> str:
        """The bundle every worker and replica should serve (``service.reload_sync``)."""
        return f"{self.prefix}serving"


@dataclass(frozen=True)
class ABKeys:
    """Keys of the A/B log (:mod:`service.ab.eventlog`), under ``{prefix}ab:``.

    Everything the exposure and event scripts touch carries the experiment's hash tag, so
    it stays in one slot of a Redis Cluster (hence on one master, where a script can
    update it atomically); only :meth:`request`, read by request id alone when an event
    arrives, is outside it and spreads over the slots like the per-user keys.
    """

    prefix: str = "tp:"

    def _tagged(self, experiment: str) -> str:
        return f"{self.prefix}ab:{{{experiment}}}:"

    def request(self, request_id: str) -> str:
        """Hash: what a ranking showed (experiment, run, arm, user, themes, segment)."""
        return f"{self.prefix}ab:req:{request_id}"

    def counted(self, experiment: str, request_id: str) -> str:
        """Hash: the request's exposure was counted (``themes``), and which of its themes
        got a click or view (``click:{theme}``/``view:{theme}``): at most one each."""
        return f"{self._tagged(experiment)}req:{request_id}"

    def event(self, experiment: str, event_id: str) -> str:
        """String: the payload an event id was first used for (duplicate vs conflict)."""
        return f"{self._tagged(experiment)}event:{event_id}"

    def runs(self, experiment: str) -> str:
        """Hash: run id -> the run's configuration (JSON), every run seen."""
        return f"{self._tagged(experiment)}runs"

    def run(self, experiment: str, run: str, name: str) -> str:
        """A counter, stream or set of one run (``imps:{arm}``, ``exposures``...)."""
        return f"{self._tagged(experiment)}{run}:{name}"
