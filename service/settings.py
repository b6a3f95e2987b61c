"""Service configuration: ``TAGPROFILE_*`` environment variables (pydantic-settings).

Every knob an operator may turn lives here, with a default that runs the demo; the CLI's
flags only override these. Values are validated at start-up, so a typo in an environment
variable stops the service with the variable named instead of misbehaving later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.store import check_prefix

Device = Literal["auto", "cuda", "cpu"]


class Settings(BaseSettings):
    """All service settings; ``TAGPROFILE_<NAME>`` sets ``<name>``."""

    model_config = SettingsConfigDict(env_prefix="TAGPROFILE_", extra="ignore", frozen=True)

    bundle: Path = Field(
        Path("artifacts/bundles/synthetic-ctmvm"), description="model bundle directory"
    )
    redis_url: str | None = Field(
        None, description="Redis to use; unset: start an embedded redis-server"
    )
    redis_cluster: bool = Field(
        False,
        description="the Redis URL is a Redis Cluster node: use redis-py's cluster client "
        "(multi-key operations stay inside one hash slot)",
    )
    redis_data_dir: Path = Field(
        Path("artifacts/redis"), description="data directory of the embedded Redis"
    )
    redis_timeout_s: float = Field(0.5, gt=0, description="socket timeout of Redis calls")
    redis_retry_s: float = Field(
        1.0, ge=0, description="after a Redis failure, how long to skip Redis before retrying"
    )
    redis_max_connections: int = Field(
        256, ge=1, description="Redis connections in the pool; more requests wait for one"
    )
    redis_pool_timeout_s: float = Field(
        5.0,
        gt=0,
        description="how long a request waits for a free pooled connection (not an outage)",
    )
    require_durable_events: bool = Field(
        False,
        description="refuse events (503) while Redis would not keep them (no AOF); "
        "false: accept them and warn",
    )
    event_fsync_timeout_s: float = Field(
        2.0,
        ge=0,
        description="where Redis has WAITAOF (>= 7.2): how long an event waits for the AOF "
        "fsync before 503; 0: do not wait",
    )
    key_prefix: str = Field("tp:", min_length=1, description="prefix of every Redis key")
    profile_ttl_s: int = Field(3600, ge=1, description="lifetime of a cached profile")
    profile_ttl_jitter: float = Field(
        0.1, ge=0, le=1, description="extra random TTL, as a fraction (spreads expiries)"
    )
    max_k: int = Field(50, ge=1, description="largest k a client may ask for; profiles cache it")
    max_candidates: int = Field(1000, ge=1, description="largest candidate list of /themes/rank")
    device: Device = Field("auto", description="onnxruntime execution provider: auto|cuda|cpu")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime threads; 0 = its default")
    batch_wait_ms: float = Field(
        2.0, ge=0, description="how long a cache miss waits for others to share a model run"
    )
    max_batch: int = Field(64, ge=1, description="largest micro-batch; 1 disables batching")
    feature_cache_size: int = Field(
        100_000, ge=0, description="users whose features are kept in memory for Redis outages"
    )
    profile_memory_size: int = Field(
        10_000, ge=0, description="recently served profiles kept in memory for Redis outages"
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1, description="largest request body; larger ones get 413 unread"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="serve: close a connection whose request head is not complete"
    )
    keep_alive_s: float = Field(5.0, gt=0, description="serve: close idle keep-alive connections")
    bundle_root: Path | None = Field(
        None,
        description="/admin/reload loads only bundles under this directory; "
        "unset: the configured bundle's parent",
    )
    admin_token: SecretStr | None = Field(
        None, description="bearer token of the admin endpoints; unset: they are disabled"
    )
    experiments: Path | None = Field(None, description="A/B experiment configuration file")
    workers: int = Field(
        1, ge=1, description="serve: worker processes sharing the port (uvicorn's supervisor)"
    )
    reload_poll_s: float | None = Field(
        None,
        ge=0,
        description="how often a process checks Redis for a bundle that another worker or "
        "replica reloaded; unset: every 1 s with workers > 1, never with one; 0: never",
    )
    host: str = Field("127.0.0.1", description="serve: address to bind")
    port: int = Field(8000, ge=0, le=65535, description="serve: port to bind")

    @field_validator("key_prefix")
    @classmethod
    def _prefix_without_hash_tag(cls, prefix: str) -> str:
        return check_prefix(prefix)

    @model_validator(mode="after")
    def _cluster_needs_url(self) -> Settings:
        if self.redis_cluster and not self.redis_url:
            raise ValueError(
                "TAGPROFILE_REDIS_CLUSTER=true needs TAGPROFILE_REDIS_URL (or --redis-url): "
                "the URL of any node of the Redis Cluster; the embedded Redis is a single "
                "server, not a cluster"
            )
        return self

    @property
    def reload_sync_s(self) -> float:
        """Seconds between checks for another process's reload; 0: this process only."""
        if self.reload_poll_s is not None:
            return self.reload_poll_s
        return 1.0 if self.workers > 1 else 0.0

    @property
    def reload_root(self) -> Path:
        """The directory ``/admin/reload`` may load bundles from (resolved)."""
        return (self.bundle_root or self.bundle.resolve().parent).resolve()
