"""The command line of ``python -m service``, for every launcher of it (loadtest, deploy.stack, tests).

Apart from ``core.process`` because an image ships the service only if its code starts it: a module that
holds this command line ties the service to whatever imports it (``tests/unit/deploy/test_dockerfiles.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from core.process import HOST


def settings_to_args(settings: Mapping[str, object]) -> list[str]:
    """``{"queue_size": 4, "log_request_text": True}`` -> ``["--queue-size", "4", "--log-request-text"]``;
    ``False`` -> ``--no-<flag>``; lists and tuples are comma-separated."""
    args: list[str] = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, list | tuple):
            args.extend([flag, ",".join(str(v) for v in value)])
        else:
            args.extend([flag, str(value)])
    return args


def service_command(model_dir: Path | str, port: int, **settings: object) -> list[str]:
    """``python -m service`` on 127.0.0.1:``port`` with each keyword as a flag (``max_batch_size=1`` ->
    ``--max-batch-size 1``)."""
    return [
        sys.executable,
        "-m",
        "service",
        "--model-dir",
        str(model_dir),
        "--host",
        HOST,
        "--port",
        str(port),
        *settings_to_args(settings),
    ]
