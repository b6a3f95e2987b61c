"""A loaded model: verified bundle + onnxruntime session + feature spec + theme catalogue.

Everything a request needs about one model version hangs off one :class:`LoadedModel`,
so a hot reload is a single reference swap: a request that started on the old version
finishes on it, and no request ever mixes two versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.model.bundle import MODEL_NAME, Bundle, load_bundle
from service.model.features import FeatureSpec
from service.model.profiles import ProfileCodec, top_k
from service.model.runtime import ModelRuntime
from service.ranking import ThemeCatalogue


@dataclass
class LoadedModel:
    bundle: Bundle
    spec: FeatureSpec
    runtime: ModelRuntime
    codec: ProfileCodec
    catalogue: ThemeCatalogue | None
    cold_start_scores: np.ndarray  # [n_tags]: what the model predicts with no history
    cold_start_blob: bytes  # its top-max_k profile, response-ready
    max_k: int

    @property
    def version(self) -> str:
        return self.bundle.model_version

    @property
    def identity(self) -> str:
        """What the cached profiles of ``version`` depend on: the ONNX graph and the
        vocabularies. Two models under one version must have the same identity, since they
        share cache keys."""
        return f"{self.bundle.manifest.files[MODEL_NAME].sha256}:{self.spec.vocabulary}"

    def score(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        """Scores [len(records), n_tags] of validated feature records."""
        return self.runtime.run(self.spec.encode(records))

    def profile_blobs(self, scores: np.ndarray) -> list[bytes]:
        """Cache bytes of the top-``max_k`` profile of each row of ``scores``."""
        ids, values = top_k(scores, self.max_k)
        return [self.codec.encode(i, v) for i, v in zip(ids, values, strict=True)]

    def score_profiles(self, records: Sequence[dict[str, Any]]) -> list[tuple[np.ndarray, bytes]]:
        """(scores, profile bytes) per record: the micro-batcher's job, run in its worker
        thread so that top-k and encoding stay off the event loop."""
        scores = self.score(records)
        return list(zip(scores, self.profile_blobs(scores), strict=True))


def load_model(
    path: str | Path,
    *,
    device: str = "auto",
    max_k: int = 50,
    intra_op_threads: int = 0,
    use_gpu_index: bool | None = None,
) -> LoadedModel:
    """Load and verify a bundle; raises :class:`~service.model.bundle.BundleError` (or the
    catalogue's / runtime's error) without touching anything already serving."""
    bundle = load_bundle(path)
    spec = FeatureSpec.from_manifest(bundle.manifest)
    runtime = ModelRuntime(bundle, device, intra_op_threads)
    catalogue = (
        ThemeCatalogue.load(bundle.themes_path, bundle.tags, use_gpu=use_gpu_index)
        if bundle.themes_path is not None
        else None
    )
    codec = ProfileCodec(bundle.tags, bundle.model_version)
    model = LoadedModel(
        bundle, spec, runtime, codec, catalogue, np.zeros(0, np.float32), b"", max_k
    )
    model.cold_start_scores = model.score([spec.empty()])[0]
    model.cold_start_blob = model.profile_blobs(model.cold_start_scores[None])[0]
    return model
