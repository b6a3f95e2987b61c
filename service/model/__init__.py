"""The model runtime: a verified bundle, its feature records, the onnxruntime session,
micro-batching and the response-ready profile encoding (no HTTP here).

Other packages import from here, never from the modules below.
"""

from service.model.batching import MicroBatcher
from service.model.bundle import MANIFEST_NAME, Bundle, BundleError, Manifest, load_bundle
from service.model.features import FeatureError, FeatureSpec, Record
from service.model.loaded import LoadedModel, load_model
from service.model.profiles import ProfileCodec, ProfileFormatError, top_k
from service.model.runtime import ModelRuntime, ProviderError

__all__ = [
    "MANIFEST_NAME",
    "Bundle",
    "BundleError",
    "FeatureError",
    "FeatureSpec",
    "LoadedModel",
    "Manifest",
    "MicroBatcher",
    "ModelRuntime",
    "ProfileCodec",
    "ProfileFormatError",
    "ProviderError",
    "Record",
    "load_bundle",
    "load_model",
    "top_k",
]
