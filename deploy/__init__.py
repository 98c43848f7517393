"""Deployment: Docker images and compose (repository root), Kubernetes manifests (deploy/k8s/), helpers.

- ``deploy.stack``: the docker compose topology as local processes (``make stack``).
- ``deploy.trainer``: the one-shot trainer (data -> train -> export unless the bundle exists), the training
  image's entry point.
- ``deploy.prometheus``: Debian's Prometheus with the project's config, the scrape target overridden.
- ``deploy.composefile``: docker-compose.yml read and interpolated as ``docker compose`` does (for the tests).
"""
