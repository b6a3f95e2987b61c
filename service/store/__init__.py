"""Redis: the key layout, the connection (or an embedded server), the feature store and cache."""
