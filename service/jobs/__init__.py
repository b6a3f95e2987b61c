"""Offline jobs of the CLI: ``load`` (a bundle's users and themes into Redis) and
``precompute`` (every user's profile into the cache: in process from the feature store, or
on Ray from Parquet feature shards).

Other packages import from here, never from the modules below.
"""

from service.jobs.features_files import FeatureFiles, feature_files
from service.jobs.load import LoadError, LoadReport, load_into_redis, read_users
from service.jobs.precompute import PrecomputeReport, precompute, user_keys, write_profiles
from service.jobs.ray_engine import EngineUnavailable, RayReport, precompute_on_ray

__all__ = [
    "EngineUnavailable",
    "FeatureFiles",
    "LoadError",
    "LoadReport",
    "PrecomputeReport",
    "RayReport",
    "feature_files",
    "load_into_redis",
    "precompute",
    "precompute_on_ray",
    "read_users",
    "user_keys",
    "write_profiles",
]
