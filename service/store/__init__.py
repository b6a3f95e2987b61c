"""Redis: the key layout, which server to use (configured or embedded), and the feature
store + profile cache of the request path.

Other packages import from here, never from the modules below.
"""

from service.store.clients import SyncClient, sync_client
from service.store.connection import URL_FILE, Endpoint, redis_endpoint, redis_url
from service.store.durability import NOT_DURABLE, Persistence, probe
from service.store.embedded import EmbeddedRedis, RedisServerError, find_redis_server, free_port
from service.store.keys import (
    SAFE_ID_PATTERN,
    USER_ID_PATTERN,
    ABKeys,
    Keys,
    check_prefix,
    valid_user_id,
)
from service.store.memory import LRU, ProfileMemory
from service.store.redis_store import (
    RedisStore,
    StoreBusy,
    StoreUnavailable,
    decode_features,
    encode_features,
)

__all__ = [
    "LRU",
    "NOT_DURABLE",
    "SAFE_ID_PATTERN",
    "URL_FILE",
    "USER_ID_PATTERN",
    "ABKeys",
    "EmbeddedRedis",
    "Endpoint",
    "Keys",
    "Persistence",
    "ProfileMemory",
    "RedisServerError",
    "RedisStore",
    "StoreBusy",
    "StoreUnavailable",
    "SyncClient",
    "check_prefix",
    "decode_features",
    "encode_features",
    "find_redis_server",
    "free_port",
    "probe",
    "redis_endpoint",
    "redis_url",
    "sync_client",
    "valid_user_id",
]
