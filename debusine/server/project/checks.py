"""Deployment checks run by `debusine-admin check` (being written)."""
