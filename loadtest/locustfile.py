"""Locust scenarios for the classification service.

Web UI (http://127.0.0.1:8089; this file makes Locust listen on 127.0.0.1 unless ``--web-host`` or
``LOCUST_WEB_HOST`` asks for another address, e.g. ``--web-host 0.0.0.0`` inside a container)::

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000

Headless, with reports and the SLO gate (what ``make loadtest`` runs)::

    python -m loadtest.run --host http://127.0.0.1:8000 --users 16 --spawn-rate 8 --duration 30s

Scenarios (weights): one message per request (10), a batch of 8-32 messages (2), ``GET /info`` (1) and
``GET /health/ready`` (1). Messages come from the prepared test split when ``make data`` has run, else from
``loadtest/sample_messages.jsonl`` (see ``loadtest/messages.py``). Every response is checked (status, schema,
each label among the bundle's labels from ``/info``) and marked failed otherwise.

The service's ``X-Tokenization-Time``, ``X-Queue-Time`` and ``X-Inference-Time`` headers are reported as extra
entries of type ``server`` (``tokenization``, ``queue``, ``inference``), so the UI shows where a request's
time went. They are not HTTP requests: Locust's "Aggregated" row counts them too, so read throughput and
failures from the HTTP rows (``loadtest/slo.py`` does).

Knobs (environment): ``LOADTEST_WAIT_SECONDS`` (max think time per user, default 0: closed loop),
``LOADTEST_MESSAGES`` (a JSON-lines file with ``text`` fields), ``TEXTCLF_API_KEY`` or
``TEXTCLF_API_KEY_FILE`` (every request then carries ``Authorization: Bearer <key>``, as the service requires
when it has a key; see ``loadtest/auth.py``).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from locust import FastHttpUser, between, events, task

from loadtest.auth import api_key_from_env
from loadtest.checks import TIMING_HEADERS, check_classify, labels_from_info, parse_timing_ms
from loadtest.messages import load_messages

MESSAGES = load_messages()
TEXTS = MESSAGES.texts
BATCH_SIZES = (8, 32)
SERVER_REQUEST_TYPE = "server"
API_KEY = api_key_from_env()
# Locust's own default is every interface: anyone on the network could start load against the service.
DEFAULT_WEB_HOST = "127.0.0.1"
Handler = TypeVar("Handler", bound=Callable[..., None])


def _listen(hook: Any) -> Callable[[Handler], Handler]:
    """``@hook.add_listener`` with types: Locust's event hooks have no annotations."""

    def register(handler: Handler) -> Handler:
        hook.add_listener(handler)
        return handler

    return register


@_listen(events.init_command_line_parser)
def _web_ui_on_loopback(parser: Any) -> None:
    # A default only: --web-host, LOCUST_WEB_HOST and Locust's config files still override it.
    parser.set_defaults(web_host=DEFAULT_WEB_HOST)


@_listen(events.init)
def _announce(environment: Any, **_: Any) -> None:
    print(f"loadtest: {len(TEXTS)} messages from {MESSAGES.source}", flush=True)
    if API_KEY is not None:
        print(f"loadtest: sending the API key from {API_KEY.source}", flush=True)


class ClassifyUser(FastHttpUser):
    """A client of the classification API."""

    wait_time = between(0.0, float(os.environ.get("LOADTEST_WAIT_SECONDS", "0")))
    # Sent with every request (the health probe ignores it); None when the service runs without a key.
    default_headers = API_KEY.headers() if API_KEY else None
    # Labels are shared by every user in this process: read once from /info.
    labels: ClassVar[list[str] | None] = None

    def on_start(self) -> None:
        if ClassifyUser.labels is None:
            self.info()

    @task(10)
    def classify_single(self) -> None:
        self._classify({"text": random.choice(TEXTS)}, expected=1, name="classify single")

    @task(2)
    def classify_batch(self) -> None:
        size = random.randint(*BATCH_SIZES)
        self._classify({"texts": random.choices(TEXTS, k=size)}, expected=size, name="classify batch")

    @task(1)
    def info(self) -> None:
        with self.client.get("/info", name="/info", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
                return
            labels = labels_from_info(_json(response))
            if labels is None:
                response.failure("no 'labels' list in /info")
                return
            ClassifyUser.labels = labels

    @task(1)
    def ready(self) -> None:
        with self.client.get("/health/ready", name="/health/ready", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")

    def _classify(self, payload: dict[str, Any], expected: int, name: str) -> None:
        with self.client.post("/classify", json=payload, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
                return
            problem = check_classify(_json(response), expected, ClassifyUser.labels)
            if problem:
                response.failure(problem)
                return
            self._report_server_timings(response.headers)

    def _report_server_timings(self, headers: Any) -> None:
        if headers is None:
            return
        for header, entry in TIMING_HEADERS.items():
            milliseconds = parse_timing_ms(headers.get(header))
            if milliseconds is not None:
                self.environment.events.request.fire(
                    request_type=SERVER_REQUEST_TYPE,
                    name=entry,
                    response_time=milliseconds,
                    response_length=0,
                    exception=None,
                    context={},
                )


def _json(response: Any) -> Any:
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        return None
