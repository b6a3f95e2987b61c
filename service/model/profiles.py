"""Top-K tag profiles and their response-ready encoding.

A cache hit must cost one Redis round trip and no JSON re-encoding, so a cached profile
is stored as the bytes of its response's ``tags`` entries (top ``max_k``), preceded by a
header of where each entry ends. Serving ``k`` tags is then a slice and a concatenation:

    b"TP1 [end_1,end_2,...]\\n{entry_1},{entry_2},..."
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson

MAGIC = b"TP1 "
SCORE_DIGITS = 6


class ProfileFormatError(ValueError):
    """Cached bytes that are not a profile (another writer, a truncated value)."""


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` best tag ids and their scores, best first (ties: lower id)."""
    scores = np.atleast_2d(scores)
    n_rows, n_tags = scores.shape
    k = min(k, n_tags)
    if k < n_tags:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # argpartition picks arbitrarily among scores tied with the k-th: redo those rows
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        for row in np.flatnonzero((scores >= kth).sum(axis=1) > k):
            part[row] = np.lexsort((np.arange(n_tags), -scores[row]))[:k]
    else:
        part = np.broadcast_to(np.arange(n_tags), (n_rows, n_tags))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    ids = np.take_along_axis(part, order, axis=1)
    return ids, np.take_along_axis(scores, ids, axis=1)


class ProfileCodec:
    """Encodes profiles of one model version and builds responses from them."""

    def __init__(self, tags: Sequence[str], model_version: str) -> None:
        self._tag_json = [orjson.dumps(name) for name in tags]
        self._version_json = orjson.dumps(model_version)

    def encode(self, tag_ids: np.ndarray, scores: np.ndarray) -> bytes:
        """Cache bytes of one profile (``tag_ids``/``scores`` best first)."""
        entries = [
            b'{"tag":%b,"tag_id":%d,"score":%b}'
            % (self._tag_json[t], t, orjson.dumps(round(s, SCORE_DIGITS)))
            for t, s in zip(tag_ids.tolist(), scores.tolist(), strict=True)
        ]
        ends, end = [], -1
        for entry in entries:
            end += len(entry) + 1
            ends.append(end)
        return MAGIC + orjson.dumps(ends) + b"\n" + b",".join(entries)

    def response(self, user_id: str, blob: bytes, k: int, *, cached: bool, source: str) -> bytes:
        """The ``GET /users/{id}/tags`` body with the first ``k`` tags of ``blob``."""
        header_end = blob.find(b"\n")
        if not blob.startswith(MAGIC) or header_end < 0:
            raise ProfileFormatError("not a profile")
        ends = orjson.loads(blob[len(MAGIC) : header_end])
        body = blob[header_end + 1 :]
        tags = body[: ends[min(k, len(ends)) - 1]] if ends else b""
        return b'{"user_id":%b,"model_version":%b,"tags":[%b],"cached":%b,"source":"%b"}' % (
            orjson.dumps(user_id),
            self._version_json,
            tags,
            b"true" if cached else b"false",
            source.encode(),
        )
