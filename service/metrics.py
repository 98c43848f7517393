"""Prometheus metrics: exactly the names in docs/contracts.md section 6 (prefix ``textclf_``, base units).

Each app gets its own ``CollectorRegistry`` (tests build many apps in one process). Label values come from
bounded sets only: route templates, methods, status codes, label names from the manifest, and the fixed reason
and error-type lists, whose series are created up front so no request can add a series.

With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set), values go to per-process files and /metrics
aggregates them; gauges declare how to combine processes, and the process_* collectors are per-process only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Literal, get_args

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

PREFIX = "textclf"
RejectionReason = Literal[
    "queue_full",
    "in_flight",
    "deadline",
    "not_ready",
    "shutting_down",
    "auth_missing",  # API key configured; no Bearer credentials (no header, another scheme, empty)
    "auth_wrong",  # a Bearer key that does not match
]
REJECTION_REASONS: tuple[RejectionReason, ...] = get_args(RejectionReason)

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
INPUT_TOKEN_BUCKETS = (4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))

__all__ = ["CONTENT_TYPE_LATEST", "RejectionReason", "ServiceMetrics", "multiprocess_dir"]

# prometheus-client leaves these unannotated; typed names keep strict mypy's no-untyped-call quiet.
_disable_created_metrics: Callable[[], None] = disable_created_metrics


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ServiceMetrics:
    """All service metrics, registered in one registry."""

    def __init__(self, error_types: Iterable[str] = (), multiprocess: bool | None = None) -> None:
        self.multiprocess = multiprocess_dir() is not None if multiprocess is None else multiprocess
        # The *_created series double the series count for no use in dashboards or alerts.
        _disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        if not self.multiprocess:
            process_collector.ProcessCollector(registry=reg)
            platform_collector.PlatformCollector(registry=reg)
            gc_collector.GCCollector(registry=reg)

        def name(short: str) -> str:
            return f"{PREFIX}_{short}"

        self.requests = Counter(
            name("requests_total"),
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=reg,
        )
        self.request_duration = Histogram(
            name("request_duration_seconds"),
            "Time from request start to response start, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.tokenization_duration = Histogram(
            name("tokenization_duration_seconds"),
            "Time to tokenize one request's texts.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.queue_duration = Histogram(
            name("queue_duration_seconds"),
            "Time from admission to the start of the request's first batch.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.inference_duration = Histogram(
            name("inference_duration_seconds"),
            "ONNX Runtime time per batch (padding, run, softmax/sigmoid).",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_size = Histogram(
            name("batch_size"), "Texts per batch.", buckets=BATCH_SIZE_BUCKETS, registry=reg
        )
        self.batch_tokens = Histogram(
            name("batch_tokens"),
            "Padded tokens per batch (longest text x texts).",
            buckets=TOKEN_BUCKETS,
            registry=reg,
        )
        self.input_tokens = Histogram(
            name("input_tokens"),
            "Tokens per text before truncation.",
            buckets=INPUT_TOKEN_BUCKETS,
            registry=reg,
        )
        self.truncated = Counter(name("truncated"), "Texts cut to the model's max_length.", registry=reg)
        self.texts = Counter(name("texts"), "Texts classified.", registry=reg)
        self.queue_depth = Gauge(
            name("queue_depth"),
            "Requests admitted and waiting for their first batch.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.queue_capacity = Gauge(
            name("queue_capacity"),
            "Most requests admitted at once (the queue_size setting).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.in_flight = Gauge(
            name("in_flight_requests"),
            "HTTP requests being handled.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.predictions = Counter(
            name("predictions"), "Predicted labels (top label per text).", ["label"], registry=reg
        )
        self.prediction_score = Histogram(
            name("prediction_score"),
            "Score of the predicted label, per label (confidence drift).",
            ["label"],
            buckets=SCORE_BUCKETS,
            registry=reg,
        )
        self.rejections = Counter(
            name("rejections"), "Requests refused before inference, by reason.", ["reason"], registry=reg
        )
        self.errors = Counter(name("errors"), "Error responses by JSON error type.", ["type"], registry=reg)
        self.model_info = Gauge(
            name("model_info"),
            "The served model (value 1).",
            ["name", "version", "quantization"],
            registry=reg,
            multiprocess_mode="max",
        )
        self.label_prior = Gauge(
            name("label_prior"),
            "Share of each label in the training split (the drift baseline).",
            ["label"],
            registry=reg,
            multiprocess_mode="max",
        )
        self.ready = Gauge(
            name("ready"), "1 when /health/ready answers 200.", registry=reg, multiprocess_mode="livemin"
        )
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason=reason)
        for error_type in error_types:
            self.errors.labels(type=error_type)
        self.ready.set(0)

    def reject(self, reason: RejectionReason) -> None:
        """Count one request refused before inference; the only place ``textclf_rejections_total`` grows."""
        self.rejections.labels(reason=reason).inc()

    def set_model(
        self, name: str, version: str, quantization: str, labels: Iterable[str], prior: dict[str, float]
    ) -> None:
        """Record the loaded model and pre-create its per-label series."""
        self.model_info.labels(name=name, version=version, quantization=quantization).set(1)
        for label in labels:
            self.predictions.labels(label=label)
            self.prediction_score.labels(label=label)
            if label in prior:
                self.label_prior.labels(label=label).set(prior[label])

    def exposition_registry(self) -> CollectorRegistry:
        """What /metrics shows: this registry, or every process's files in multiprocess mode."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            collect: Callable[[CollectorRegistry], object] = multiprocess.MultiProcessCollector
            collect(registry)
            return registry
        return self.registry

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (all processes in multiprocess mode)."""
        return generate_latest(self.exposition_registry())
