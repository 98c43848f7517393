"""Serve a model bundle over HTTP.

    python -m service --model-dir models/disaster-related            # http://127.0.0.1:8000
    python -m service --model-dir models/disaster-related --port 8080 --metrics-port 9100
    TEXTCLF_MODEL_DIR=models/disaster-related TEXTCLF_HOST=0.0.0.0 python -m service
    python -m service --help                                          # every setting, its env var and default
    make serve                                                        # MODEL_DIR, HOST, PORT from Makefile

    curl -s localhost:8000/classify -H 'content-type: application/json' -d '{"text": "We need water"}'

    # With an API key, POST /classify and /info need `Authorization: Bearer <key>` (probes stay open):
    openssl rand -hex 32 > api-key && TEXTCLF_API_KEY_FILE=api-key python -m service
    curl -s localhost:8000/classify -H "Authorization: Bearer $(cat api-key)" \
         -H 'content-type: application/json' -d '{"text": "We need water"}'

Once the model is loaded, one plain line on stderr says where it serves (``textclf: serving NAME VERSION
at http://HOST:PORT (page: ...; docs: .../schema/swagger)``); every other line is JSON.

uvicorn runs the app. On SIGTERM it stops accepting connections, waits up to
``--shutdown-timeout-seconds`` for requests in progress, then runs the app's shutdown (the batcher
drains admitted work) and exits.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

from service.settings import Settings, SettingsError, parse_args


def _prepare_multiprocess_dir() -> str:
    """prometheus-client multiprocess mode needs an empty shared directory, set before the workers start."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)
    else:
        path = tempfile.mkdtemp(prefix="textclf-prometheus-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def serve(settings: Settings) -> None:
    import uvicorn

    from service.logging import configure_logging

    configure_logging(settings.log_level)
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": max(1, round(settings.shutdown_timeout_seconds)),
        "lifespan": "on",
    }
    if settings.workers == 1:
        from service.app import create_app

        uvicorn.run(create_app(settings, announce=True), **common)  # type: ignore[arg-type]
        return
    # Several processes: each builds its own app (ONNX Runtime sessions cannot cross a fork) from TEXTCLF_*.
    created = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    os.environ.update(settings.to_env())
    metrics_dir = _prepare_multiprocess_dir()
    logging.getLogger("textclf.service").info(
        "multiprocess metrics",
        extra={"fields": {"event": "multiprocess_metrics", "dir": metrics_dir, "workers": settings.workers}},
    )
    try:
        uvicorn.run(
            "service.app:create_app_from_env",
            factory=True,
            workers=settings.workers,
            **common,  # type: ignore[arg-type]
        )
    finally:
        if created:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_args(argv)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
