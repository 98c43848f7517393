"""Generate the Grafana dashboard ``dashboards/textclf.json`` (committed; keys sorted so diffs stay small).

    python -m monitoring.grafana.generate          # rewrite monitoring/grafana/dashboards/textclf.json

Grafana loads it read-only through ``provisioning/dashboards/textclf.yml``; edit this file, not the JSON (a
unit test fails when the committed JSON differs from what this script writes). Every query selects
``job="$job", instance=~"$instance"``; the integration test evaluates each one against a live Prometheus.

The panels are built with Grafana's typed builders (``grafana-foundation-sdk``, the release generated for
Grafana 11.6, the version docker-compose.yml runs): option names and enum values come from Grafana's own
schema, so mypy rejects an option the panel does not have. Panels fill each row left to right; their widths in
a row add up to 24 per line.

The builders replaced 565 lines of hand-written dicts (now 444, with the same panels, queries, thresholds and
uids). grafanalib 0.7.1 was not taken: no release since January 2024, no type hints, and its Heatmap is the
pre-Grafana-9 panel (no ``calculate``, ``rowsFrame`` or tooltip ``yHistogram``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

from monitoring.prometheus.generate import NON_API_ROUTES, Thresholds

HERE = Path(__file__).resolve().parent
DASHBOARD_FILE = HERE / "dashboards" / "textclf.json"
DASHBOARD_UID = "textclf-overview"
# Must match provisioning/datasources/prometheus.yml.
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="textclf-prometheus")

SEL = 'job="$job", instance=~"$instance"'
API = f'{SEL}, route!~"{NON_API_ROUTES}"'
QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))

Targets = list[tuple[str, str]]
"""(PromQL, legend) pairs."""
PanelT = TypeVar("PanelT", timeseries.Panel, stat.Panel, heatmap.Panel)


def rate(metric: str, selector: str = SEL, by: str = "") -> str:
    grouping = f"by ({by}) " if by else ""
    return f"sum {grouping}(rate({metric}{{{selector}}}[$__rate_interval]))"


def quantile(q: float, histogram: str, selector: str = SEL) -> str:
    return f"histogram_quantile({q:g}, {rate(histogram + '_bucket', selector, 'le')})"


def quantile_targets(histogram: str, selector: str = SEL) -> Targets:
    return [(quantile(q, histogram, selector), name) for q, name in QUANTILES]


def ratio(status_regex: str) -> str:
    """Share of API requests whose status matches; 0 rather than no data when there are none."""
    bad = rate("textclf_requests_total", f'{API}, status=~"{status_regex}"')
    total = rate("textclf_requests_total", API)
    return f"({bad} or 0 * {total}) / {total}"


def mean(histogram: str, by: str = "") -> str:
    return f"{rate(histogram + '_sum', SEL, by)} / {rate(histogram + '_count', SEL, by)}"


def _panel(
    panel: PanelT, title: str, description: str, targets: Targets, *, unit: str, width: int, height: int
) -> PanelT:
    """What every panel shares: text (``description`` is the hover help), size, datasource and queries."""
    panel.title(title).description(description).datasource(DATASOURCE).unit(unit).span(width).height(height)
    for index, (expr, legend) in enumerate(targets):
        query = prometheus.Dataquery().expr(expr).legend_format(legend).range().ref_id(chr(ord("A") + index))
        query.editor_mode(pm.QueryEditorMode.CODE).datasource(DATASOURCE)
        if isinstance(panel, heatmap.Panel):
            query.format(pm.PromQueryFormat.HEATMAP)
        panel.with_target(query)
    return panel


def graph(
    title: str,
    description: str,
    targets: Targets,
    *,
    unit: str = "short",
    width: int = 8,
    threshold: float | None = None,
    threshold_color: str = "red",
) -> timeseries.Panel:
    """A time series; ``threshold`` draws a dashed horizontal line there (an alert threshold)."""
    panel = _panel(timeseries.Panel(), title, description, targets, unit=unit, width=width, height=8)
    panel.fill_opacity(10).line_width(1).show_points(cm.VisibilityMode.NEVER)
    legend = cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST).show_legend(True)
    panel.legend(legend.placement(cm.LegendPlacement.BOTTOM))
    panel.tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    if threshold is not None:
        steps = [dm.Threshold(color="transparent"), dm.Threshold(color=threshold_color, value=threshold)]
        panel.thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(steps))
        panel.thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
    return panel


def big_number(
    title: str, description: str, targets: Targets, *, unit: str = "short", width: int = 4
) -> stat.Panel:
    """A stat panel showing the last value."""
    panel = _panel(stat.Panel(), title, description, targets, unit=unit, width=width, height=4)
    panel.color_mode(cm.BigValueColorMode.VALUE).graph_mode(cm.BigValueGraphMode.NONE)
    panel.text_mode(cm.BigValueTextMode.VALUE)
    return panel.reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))


def rows(t: Thresholds) -> dict[str, list[timeseries.Panel | stat.Panel | heatmap.Panel]]:
    """The dashboard, top to bottom: row title -> its panels."""
    budget = t.error_budget
    ready_mapping = dm.ValueMap(
        options={
            "0": dm.ValueMappingResult(text="not ready", color="red"),
            "1": dm.ValueMappingResult(text="ready", color="green"),
        }
    )
    dashed = dm.DynamicConfigValue(id_val="custom.lineStyle", value={"dash": [10, 10], "fill": "dash"})
    return {
        "Overview": [
            big_number(
                "Model",
                "The served bundle: model name, version and quantization (textclf_model_info).",
                [
                    (
                        f"max by (name, version, quantization) (textclf_model_info{{{SEL}}})",
                        "{{name}} {{version}} ({{quantization}})",
                    )
                ],
                width=9,
            )
            .text_mode(cm.BigValueTextMode.NAME)
            .color_mode(cm.BigValueColorMode.NONE),
            big_number(
                "Ready",
                "1 when every selected replica answers /health/ready (model loaded, not shutting down).",
                [(f"min(textclf_ready{{{SEL}}})", "ready")],
                width=3,
            ).mappings([ready_mapping]),
            big_number(
                "Requests/s",
                "API requests per second (probes and /metrics excluded).",
                [(rate("textclf_requests_total", API), "requests/s")],
                unit="reqps",
            ),
            big_number(
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
                unit="percentunit",
            ),
            big_number(
                "Texts classified (time range)",
                "Texts classified over the dashboard's time range (a batch request counts each text).",
                [(f"sum(increase(textclf_texts_total{{{SEL}}}[$__range]))", "texts")],
            ),
        ],
        "Traffic and errors": [
            graph(
                "Requests by status",
                "API requests per second by HTTP status: 2xx served, 4xx client errors (bad input), 429 "
                "and 503 refused (overload, not ready), other 5xx failures.",
                [(rate("textclf_requests_total", API, "status"), "{{status}}")],
                unit="reqps",
            ),
            graph(
                "Error and rejection ratios",
                f"Share of API requests answered 5xx (HighErrorRatio above {t.error_ratio:.0%}) and "
                f"refused with 429/503 (RejectionsHigh above {t.rejection_ratio:.0%}).",
                [(ratio("5.."), "5xx"), (ratio("429|503"), "429/503")],
                unit="percentunit",
                threshold=t.error_ratio,
            ),
            graph(
                "Error budget burn rate",
                f"5xx ratio divided by the error budget ({budget:g} for {t.availability_slo:.1%}): 1 "
                "spends the budget in exactly 30 days. The burn-rate alerts fire at 14.4 (1h and 5m) "
                "and 6 (6h and 30m).",
                [
                    (f'job:textclf_request_errors:ratio_rate{w}{{job="$job"}} / {budget:g}', w)
                    for w in ("5m", "30m", "1h", "6h")
                ],
                threshold=14.4,
            ),
            graph(
                "Errors by type",
                "Error responses per second by their JSON error type (validation_error, text_too_long, "
                "queue_full, internal_error, ...).",
                [(rate("textclf_errors_total", SEL, "type"), "{{type}}")],
                unit="reqps",
                width=12,
            ),
            graph(
                "Rejections by reason",
                "Requests refused before inference per second: queue_full, in_flight and deadline mean "
                "overload, not_ready and shutting_down mean restarts.",
                [(rate("textclf_rejections_total", SEL, "reason"), "{{reason}}")],
                unit="reqps",
                width=12,
            ),
        ],
        "Latency": [
            graph(
                "Request latency (end to end)",
                f"p50/p95/p99 of API request time, from request start to response start. The dashed line "
                f"is the p99 objective ({t.latency_p99_slo_seconds:g} s, HighLatencyP99).",
                quantile_targets("textclf_request_duration_seconds", API),
                unit="s",
                width=12,
                threshold=t.latency_p99_slo_seconds,
            ),
            graph(
                "Tokenization time",
                "p50/p95/p99 time to tokenize one request's texts.",
                quantile_targets("textclf_tokenization_duration_seconds"),
                unit="s",
                width=12,
            ),
            graph(
                "Queue time",
                "p50/p95/p99 time from admission to the start of the request's first batch: grows when "
                "requests arrive faster than batches finish.",
                quantile_targets("textclf_queue_duration_seconds"),
                unit="s",
                width=12,
            ),
            graph(
                "Inference time (per batch)",
                "p50/p95/p99 ONNX Runtime time per batch (padding, run, softmax/sigmoid).",
                quantile_targets("textclf_inference_duration_seconds"),
                unit="s",
                width=12,
            ),
        ],
        "Batching and queue": [
            graph(
                "Batch size",
                "Texts per batch: mean and p95. Near 1 when traffic is light (a batch runs at once "
                "when the batcher is idle); grows under load.",
                [(mean("textclf_batch_size"), "mean"), (quantile(0.95, "textclf_batch_size"), "p95")],
            ),
            graph(
                "Batch tokens (padded)",
                "Padded tokens per batch (longest text x texts): mean and p95; capped by max_batch_tokens.",
                [(mean("textclf_batch_tokens"), "mean"), (quantile(0.95, "textclf_batch_tokens"), "p95")],
            ),
            graph(
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
        "Model": [
            graph(
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
            )
            .min(0)
            .max(1)
            .override_by_regexp(".* prior", [dashed]),
            graph(
                "Predictions/s by label",
                "Predicted (top) labels per second.",
                [(rate("textclf_predictions_total", SEL, "label"), "{{label}}")],
                width=12,
            ),
            _panel(
                heatmap.Panel(),
                "Prediction score distribution",
                "How many predictions fall in each 0.05-wide band of the predicted label's score. Mass "
                "moving towards low scores means the model is unsure about what it sees.",
                [(rate("textclf_prediction_score_bucket", SEL, "le"), "{{le}}")],
                unit="short",
                width=12,
                height=8,
            )
            .calculate(False)
            .cell_gap(1)
            .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME).scheme("Oranges").steps(64))
            .y_axis(heatmap.YAxisConfig().axis_placement(cm.AxisPlacement.LEFT).unit("short"))
            .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.LE))
            .mode(cm.TooltipDisplayMode.SINGLE)
            .show_y_histogram(),
            graph(
                "Mean prediction score",
                f"Mean score of the predicted label, overall and per label. LowConfidence fires when "
                f"the 1h mean stays below {t.low_confidence_score:g} (dashed line).",
                [
                    (mean("textclf_prediction_score"), "all"),
                    (mean("textclf_prediction_score", "label"), "{{label}}"),
                ],
                width=12,
                threshold=t.low_confidence_score,
                threshold_color="orange",
            ),
            graph(
                "Input length (tokens)",
                "p50/p95/p99 tokens per text before truncation; texts above the model's max_length are cut.",
                quantile_targets("textclf_input_tokens"),
                width=12,
            ),
            graph(
                "Truncation rate",
                "Share of texts longer than the model's max_length (cut before inference, so the end of "
                "the message is ignored).",
                [(f"{rate('textclf_truncated_total')} / {rate('textclf_texts_total')}", "truncated")],
                unit="percentunit",
                width=12,
            ),
        ],
        "Process": [
            graph(
                "CPU",
                "CPU cores used by each replica's process (1 = one core fully busy).",
                [(rate("process_cpu_seconds_total", SEL, "instance"), "{{instance}}")],
                width=12,
            ),
            graph(
                "Memory",
                "Resident memory of each replica's process.",
                [(f"sum by (instance) (process_resident_memory_bytes{{{SEL}}})", "{{instance}}")],
                unit="bytes",
                width=12,
            ),
        ],
    }


def _variables() -> list[db.CustomVariable | db.QueryVariable]:
    textclf = dm.VariableOption(selected=True, text="textclf", value="textclf")
    instance_query = 'label_values(up{job="$job"}, instance)'
    return [
        db.CustomVariable("job")
        .label("Job")
        .description("Prometheus scrape job of the service (docs/contracts.md: textclf).")
        .values("textclf")
        .current(textclf)
        .options([textclf]),
        db.QueryVariable("instance")
        .label("Instance")
        .description("Replicas to show (All by default).")
        .datasource(DATASOURCE)
        .query({"query": instance_query, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC),
    ]


def dashboard(thresholds: Thresholds | None = None) -> dict[str, Any]:
    """The dashboard JSON model (Grafana 11.6 schema)."""
    builder = (
        db.Dashboard("textclf: service and model")
        .uid(DASHBOARD_UID)
        .description("textclf: traffic, errors, latency per phase, batching, model drift and confidence.")
        .readonly()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .refresh("10s")
        .tags(["textclf"])
        .time("now-1h", "now")
        .timezone("utc")
        .version(1)
        .annotation(
            db.AnnotationQuery()
            .name("Annotations & Alerts")
            .built_in(1)
            .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
        )
    )
    for variable in _variables():
        builder.with_variable(variable)
    for title, panels in rows(thresholds or Thresholds()).items():
        builder.with_row(db.Row(title))
        for panel in panels:
            builder.with_panel(panel)
    model = builder.build()
    for panel_id, panel_model in enumerate(model.panels or [], start=1):
        panel_model.id_val = panel_id
    result: dict[str, Any] = json.loads(json.dumps(model, cls=JSONEncoder))
    return result


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
