"""The model runtime: a verified bundle, its feature records, the onnxruntime session,
micro-batching, the response-ready profile encoding and the profile scoring path of a
request (cache, features, model; no HTTP here).

Other packages import from here, never from the modules below.
"""

from service.model.batching import MicroBatcher
from service.model.bundle import MANIFEST_NAME, Bundle, BundleError, Manifest, load_bundle
from service.model.features import FeatureError, FeatureSpec, Record
from service.model.loaded import LoadedModel, load_model
from service.model.profiles import ProfileCodec, ProfileFormatError, top_k
from service.model.runtime import ModelRuntime, ProviderError
from service.model.scoring import Profiles, Scored
from service.model.serving import Serving

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
    "Profiles",
    "ProviderError",
    "Record",
    "Scored",
    "Serving",
    "load_bundle",
    "load_model",
    "top_k",
]
