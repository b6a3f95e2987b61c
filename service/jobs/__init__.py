"""Offline jobs of the CLI: ``load`` (a bundle's users and themes into Redis) and
``precompute`` (every stored user's profile into the cache).

Other packages import from here, never from the modules below.
"""

from service.jobs.load import LoadError, LoadReport, load_into_redis, read_users
from service.jobs.precompute import PrecomputeReport, precompute, user_keys

__all__ = [
    "LoadError",
    "LoadReport",
    "PrecomputeReport",
    "load_into_redis",
    "precompute",
    "read_users",
    "user_keys",
]
