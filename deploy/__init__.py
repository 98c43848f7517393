"""Deployment helpers: the native twin of docker compose (`python -m deploy.stack`)."""
