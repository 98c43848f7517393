"""Generate the Grafana dashboard ``dashboards/textclf.json`` (committed; keys sorted so diffs stay small).

    python -m monitoring.grafana.generate          # rewrite monitoring/grafana/dashboards/textclf.json

Grafana loads it read-only through ``provisioning/dashboards/textclf.yml``; edit this file, not the JSON (a
unit test fails when the committed JSON differs from what this script writes). Every query selects
``job="$job", instance=~"$instance"``; the integration test evaluates each one against a live Prometheus.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitoring.prometheus.generate import NON_API_ROUTES, Thresholds

HERE = Path(__file__).resolve().parent
DASHBOARD_FILE = HERE / "dashboards" / "textclf.json"
DASHBOARD_UID = "textclf-overview"
# Must match provisioning/datasources/prometheus.yml.
DATASOURCE = {"type": "prometheus", "uid": "textclf-prometheus"}

SEL = 'job="$job", instance=~"$instance"'
API = f'{SEL}, route!~"{NON_API_ROUTES}"'
QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))


@dataclass
class Panel:
    """One dashboard panel: what it shows (``description``, also the README's text) and its queries."""

    title: str
    description: str
    targets: list[tuple[str, str]]
    """(PromQL, legend) pairs."""
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 8
    height: int = 8
    extra: dict[str, Any] = field(default_factory=dict)
    """Panel-specific JSON merged over the defaults (options, fieldConfig)."""


@dataclass
class Row:
    title: str
    panels: list[Panel]


def rate(metric: str, selector: str = SEL, by: str = "") -> str:
    grouping = f"by ({by}) " if by else ""
    return f"sum {grouping}(rate({metric}{{{selector}}}[$__rate_interval]))"


def quantile_targets(histogram: str, selector: str = SEL) -> list[tuple[str, str]]:
    return [
        (f"histogram_quantile({q}, {rate(histogram + '_bucket', selector, 'le')})", name)
        for q, name in QUANTILES
    ]


def ratio(status_regex: str) -> str:
    """Share of API requests whose status matches; 0 rather than no data when there are none."""
    bad = rate("textclf_requests_total", f'{API}, status=~"{status_regex}"')
    total = rate("textclf_requests_total", API)
    return f"({bad} or 0 * {total}) / {total}"


def mean(histogram: str, by: str = "") -> str:
    return f"{rate(histogram + '_sum', SEL, by)} / {rate(histogram + '_count', SEL, by)}"


def threshold_line(value: float, color: str = "red") -> dict[str, Any]:
    """fieldConfig that draws a dashed horizontal line at ``value`` (an alert threshold)."""
    return {
        "fieldConfig": {
            "defaults": {
                "custom": {"thresholdsStyle": {"mode": "dashed"}},
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "transparent", "value": None}, {"color": color, "value": value}],
                },
            }
        }
    }


def rows(t: Thresholds) -> list[Row]:
    """The dashboard, top to bottom."""
    budget = t.error_budget
    return [
        Row(
            "Overview",
            [
                Panel(
                    "Model",
                    "The served bundle: model name, version and quantization (textclf_model_info).",
                    [
                        (
                            f"max by (name, version, quantization) (textclf_model_info{{{SEL}}})",
                            "{{name}} {{version}} ({{quantization}})",
                        )
                    ],
                    kind="stat",
                    width=9,
                    height=4,
                    extra={"options": {"textMode": "name", "colorMode": "none"}},
                ),
                Panel(
                    "Ready",
                    "1 when every selected replica answers /health/ready (model loaded, not shutting down).",
                    [(f"min(textclf_ready{{{SEL}}})", "ready")],
                    kind="stat",
                    width=3,
                    height=4,
                    extra={
                        "fieldConfig": {
                            "defaults": {
                                "mappings": [
                                    {
                                        "type": "value",
                                        "options": {
                                            "0": {"text": "not ready", "color": "red"},
                                            "1": {"text": "ready", "color": "green"},
                                        },
                                    }
                                ]
                            }
                        }
                    },
                ),
                Panel(
                    "Requests/s",
                    "API requests per second (probes and /metrics excluded).",
                    [(rate("textclf_requests_total", API), "requests/s")],
                    kind="stat",
                    unit="reqps",
                    width=4,
                    height=4,
                ),
                Panel(
                    "Availability (time range)",
                    f"Share of API requests not answered 5xx over the dashboard's time range; the "
                    f"objective is {t.availability_slo:.1%}.",
                    [
                        (
                            f'1 - ((sum(increase(textclf_requests_total{{{API}, status=~"5.."}}[$__range])) '
                            f"or vector(0)) / sum(increase(textclf_requests_total{{{API}}}[$__range])))",
                            "availability",
                        )
                    ],
                    kind="stat",
                    unit="percentunit",
                    width=4,
                    height=4,
                    extra={"options": {"reduceOptions": {"calcs": ["lastNotNull"]}}},
                ),
                Panel(
                    "Texts classified (time range)",
                    "Texts classified over the dashboard's time range (a batch request counts each text).",
                    [(f"sum(increase(textclf_texts_total{{{SEL}}}[$__range]))", "texts")],
                    kind="stat",
                    width=4,
                    height=4,
                ),
            ],
        ),
        Row(
            "Traffic and errors",
            [
                Panel(
                    "Requests by status",
                    "API requests per second by HTTP status: 2xx served, 4xx client errors (bad input), 429 "
                    "and 503 refused (overload, not ready), other 5xx failures.",
                    [(rate("textclf_requests_total", API, "status"), "{{status}}")],
                    unit="reqps",
                ),
                Panel(
                    "Error and rejection ratios",
                    f"Share of API requests answered 5xx (HighErrorRatio above {t.error_ratio:.0%}) and "
                    f"refused with 429/503 (RejectionsHigh above {t.rejection_ratio:.0%}).",
                    [(ratio("5.."), "5xx"), (ratio("429|503"), "429/503")],
                    unit="percentunit",
                    extra=threshold_line(t.error_ratio),
                ),
                Panel(
                    "Error budget burn rate",
                    f"5xx ratio divided by the error budget ({budget:g} for {t.availability_slo:.1%}): 1 "
                    "spends the budget in exactly 30 days. The burn-rate alerts fire at 14.4 (1h and 5m) "
                    "and 6 (6h and 30m).",
                    [
                        (f'job:textclf_request_errors:ratio_rate{w}{{job="$job"}} / {budget:g}', w)
                        for w in ("5m", "30m", "1h", "6h")
                    ],
                    extra=threshold_line(14.4),
                ),
                Panel(
                    "Errors by type",
                    "Error responses per second by their JSON error type (validation_error, text_too_long, "
                    "queue_full, internal_error, ...).",
                    [(rate("textclf_errors_total", SEL, "type"), "{{type}}")],
                    unit="reqps",
                    width=12,
                ),
                Panel(
                    "Rejections by reason",
                    "Requests refused before inference per second: queue_full, in_flight and deadline mean "
                    "overload, not_ready and shutting_down mean restarts.",
                    [(rate("textclf_rejections_total", SEL, "reason"), "{{reason}}")],
                    unit="reqps",
                    width=12,
                ),
            ],
        ),
        Row(
            "Latency",
            [
                Panel(
                    "Request latency (end to end)",
                    f"p50/p95/p99 of API request time, from request start to response start. The dashed line "
                    f"is the p99 objective ({t.latency_p99_slo_seconds:g} s, HighLatencyP99).",
                    quantile_targets("textclf_request_duration_seconds", API),
                    unit="s",
                    width=12,
                    extra=threshold_line(t.latency_p99_slo_seconds),
                ),
                Panel(
                    "Tokenization time",
                    "p50/p95/p99 time to tokenize one request's texts.",
                    quantile_targets("textclf_tokenization_duration_seconds"),
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Queue time",
                    "p50/p95/p99 time from admission to the start of the request's first batch: grows when "
                    "requests arrive faster than batches finish.",
                    quantile_targets("textclf_queue_duration_seconds"),
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Inference time (per batch)",
                    "p50/p95/p99 ONNX Runtime time per batch (padding, run, softmax/sigmoid).",
                    quantile_targets("textclf_inference_duration_seconds"),
                    unit="s",
                    width=12,
                ),
            ],
        ),
        Row(
            "Batching and queue",
            [
                Panel(
                    "Batch size",
                    "Texts per batch: mean and p95. Near 1 when traffic is light (a batch runs at once "
                    "when the batcher is idle); grows under load.",
                    [
                        (mean("textclf_batch_size"), "mean"),
                        (f"histogram_quantile(0.95, {rate('textclf_batch_size_bucket', SEL, 'le')})", "p95"),
                    ],
                ),
                Panel(
                    "Batch tokens (padded)",
                    "Padded tokens per batch (longest text x texts): mean and p95; capped by "
                    "max_batch_tokens.",
                    [
                        (mean("textclf_batch_tokens"), "mean"),
                        (
                            f"histogram_quantile(0.95, {rate('textclf_batch_tokens_bucket', SEL, 'le')})",
                            "p95",
                        ),
                    ],
                ),
                Panel(
                    "Queue depth and in-flight",
                    f"Requests waiting for a batch (highest in each interval), HTTP requests being handled, "
                    f"and the queue capacity (QueueSaturation above {t.queue_saturation:.0%} of it).",
                    [
                        (f"sum(max_over_time(textclf_queue_depth{{{SEL}}}[$__interval]))", "queue depth"),
                        (f"sum(textclf_in_flight_requests{{{SEL}}})", "in flight"),
                        (f"sum(textclf_queue_capacity{{{SEL}}})", "capacity"),
                    ],
                ),
            ],
        ),
        Row(
            "Model",
            [
                Panel(
                    "Predictions by label vs training prior",
                    f"Share of predictions per label (solid) against the label's share in the training "
                    f"data (dashed, textclf_label_prior from the manifest). PredictionDrift fires when the "
                    f"1h share is more than {t.drift_tolerance * 100:g} points away from the prior.",
                    [
                        (
                            f"{rate('textclf_predictions_total', SEL, 'label')}"
                            f" / ignoring (label) group_left {rate('textclf_predictions_total')}",
                            "{{label}}",
                        ),
                        (f"max by (label) (textclf_label_prior{{{SEL}}})", "{{label}} prior"),
                    ],
                    unit="percentunit",
                    width=12,
                    extra={
                        "fieldConfig": {
                            "defaults": {"max": 1, "min": 0},
                            "overrides": [
                                {
                                    "matcher": {"id": "byRegexp", "options": ".* prior"},
                                    "properties": [
                                        {
                                            "id": "custom.lineStyle",
                                            "value": {"dash": [10, 10], "fill": "dash"},
                                        }
                                    ],
                                }
                            ],
                        }
                    },
                ),
                Panel(
                    "Predictions/s by label",
                    "Predicted (top) labels per second.",
                    [(rate("textclf_predictions_total", SEL, "label"), "{{label}}")],
                    width=12,
                ),
                Panel(
                    "Prediction score distribution",
                    "How many predictions fall in each 0.05-wide band of the predicted label's score. Mass "
                    "moving towards low scores means the model is unsure about what it sees.",
                    [(rate("textclf_prediction_score_bucket", SEL, "le"), "{{le}}")],
                    kind="heatmap",
                    width=12,
                    extra={
                        "options": {
                            "calculate": False,
                            "cellGap": 1,
                            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                            "yAxis": {"axisPlacement": "left", "unit": "short"},
                            "rowsFrame": {"layout": "le"},
                            "tooltip": {"show": True, "yHistogram": True},
                        }
                    },
                ),
                Panel(
                    "Mean prediction score",
                    f"Mean score of the predicted label, overall and per label. LowConfidence fires when "
                    f"the 1h mean stays below {t.low_confidence_score:g} (dashed line).",
                    [
                        (mean("textclf_prediction_score"), "all"),
                        (mean("textclf_prediction_score", "label"), "{{label}}"),
                    ],
                    width=12,
                    extra=threshold_line(t.low_confidence_score, "orange"),
                ),
                Panel(
                    "Input length (tokens)",
                    "p50/p95/p99 tokens per text before truncation; texts above the model's max_length "
                    "are cut.",
                    quantile_targets("textclf_input_tokens"),
                    width=12,
                ),
                Panel(
                    "Truncation rate",
                    "Share of texts longer than the model's max_length (cut before inference, so the end of "
                    "the message is ignored).",
                    [(f"{rate('textclf_truncated_total')} / {rate('textclf_texts_total')}", "truncated")],
                    unit="percentunit",
                    width=12,
                ),
            ],
        ),
        Row(
            "Process",
            [
                Panel(
                    "CPU",
                    "CPU cores used by each replica's process (1 = one core fully busy).",
                    [(rate("process_cpu_seconds_total", SEL, "instance"), "{{instance}}")],
                    width=12,
                ),
                Panel(
                    "Memory",
                    "Resident memory of each replica's process.",
                    [(f"sum by (instance) (process_resident_memory_bytes{{{SEL}}})", "{{instance}}")],
                    unit="bytes",
                    width=12,
                ),
            ],
        ),
    ]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": expr,
            "legendFormat": legend,
            "range": True,
            "refId": chr(ord("A") + index),
            **({"format": "heatmap"} if panel.kind == "heatmap" else {}),
        }
        for index, (expr, legend) in enumerate(panel.targets)
    ]
    result: dict[str, Any] = {
        "datasource": DATASOURCE,
        "description": panel.description,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "id": panel_id,
        "targets": targets,
        "title": panel.title,
        "type": panel.kind,
    }
    if panel.kind == "timeseries":
        result["fieldConfig"]["defaults"]["custom"] = {
            "fillOpacity": 10,
            "lineWidth": 1,
            "showPoints": "never",
        }
        result["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        result["options"] = {
            "colorMode": "value",
            "graphMode": "none",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "value",
        }
    return _merge(result, panel.extra)


def dashboard(thresholds: Thresholds | None = None) -> dict[str, Any]:
    """The dashboard JSON model (Grafana 10 schema)."""
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for row in rows(thresholds or Thresholds()):
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "id": panel_id,
                "panels": [],
                "title": row.title,
                "type": "row",
            }
        )
        panel_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel_json(panel, panel_id, x, y))
            panel_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "textclf: traffic, errors, latency per phase, batching, model drift and confidence.",
        "editable": False,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": panels,
        "refresh": "10s",
        "schemaVersion": 39,
        "tags": ["textclf"],
        "templating": {"list": _variables()},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "title": "textclf: service and model",
        "uid": DASHBOARD_UID,
        "version": 1,
    }


def _variables() -> list[dict[str, Any]]:
    instance_query = 'label_values(up{job="$job"}, instance)'
    return [
        {
            "current": {"selected": True, "text": "textclf", "value": "textclf"},
            "description": "Prometheus scrape job of the service (docs/CONTRACTS.md: textclf).",
            "hide": 0,
            "includeAll": False,
            "label": "Job",
            "multi": False,
            "name": "job",
            "options": [{"selected": True, "text": "textclf", "value": "textclf"}],
            "query": "textclf",
            "skipUrlSync": False,
            "type": "custom",
        },
        {
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "datasource": DATASOURCE,
            "definition": instance_query,
            "description": "Replicas to show (All by default).",
            "hide": 0,
            "includeAll": True,
            "label": "Instance",
            "multi": True,
            "name": "instance",
            "options": [],
            "query": {"query": instance_query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2,
            "regex": "",
            "skipUrlSync": False,
            "sort": 1,
            "type": "query",
        },
    ]


def render(thresholds: Thresholds | None = None) -> str:
    return json.dumps(dashboard(thresholds), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DASHBOARD_FILE, help="Dashboard JSON file to write.")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
