"""Theme ranking: the catalogue of theme cards and their retrieval for a user."""
