"""Offline jobs of the CLI: load a bundle into Redis, precompute every profile."""
