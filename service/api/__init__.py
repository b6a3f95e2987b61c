"""The HTTP layer: request and response schemas (routers come with the next commits)."""
