"""The model serving requests and its micro-batcher: one value, so that a hot reload swaps
both at once and no request ever mixes two model versions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.model.batching import BatchObserver, MicroBatcher
from service.model.loaded import LoadedModel


@dataclass(frozen=True)
class Serving:
    """A loaded model and the batcher that runs it; rows are (all-tag scores, profile bytes)."""

    model: LoadedModel
    batcher: MicroBatcher[dict[str, Any]]

    @classmethod
    def start(
        cls,
        model: LoadedModel,
        *,
        max_batch: int,
        max_wait_s: float,
        observe: BatchObserver | None = None,
    ) -> Serving:
        """Serve ``model``: scoring, top-k and encoding run in the batcher's worker thread."""
        batcher = MicroBatcher(
            model.score_profiles, max_batch=max_batch, max_wait_s=max_wait_s, observe=observe
        )
        return cls(model, batcher)

    async def close(self) -> None:
        """Answer what is queued, then stop (see :meth:`MicroBatcher.close`)."""
        await self.batcher.close()
