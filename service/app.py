"""The app factory: ``create_app(settings) -> Litestar``. Nothing happens at import time.

Start-up (the lifespan) answers /health/live at once and loads the model in the background: read the
bundle (``load_bundle``), check every file's SHA-256 against the manifest (``verify_files``), build the
engine, check that the model's outputs match the manifest's labels, run a warm-up inference, start the
batcher, and only then report ready. A bad bundle leaves the service up but not ready (/health/ready and
/classify answer 503 with the reason) and writes one ``bundle_invalid`` log line naming the file and field.

With an API key configured (``--api-key`` / ``--api-key-file``), the request middleware refuses POST /classify
and /info without ``Authorization: Bearer <key>`` (401, before the body is read); the health probes, /metrics,
the page and /schema stay open.

Shutdown (uvicorn runs it after SIGTERM, once open connections have drained): mark not ready, let the batcher
finish admitted work, stop.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import numpy as np
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Reference,
    RequestBody,
    SecurityScheme,
)
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from core.bundle import Bundle, BundleError, load_bundle, verify_files
from core.engine import Engine
from service import controllers
from service.batcher import Batcher
from service.controllers import Runtime, runtime
from service.errors import (
    ERROR_TYPES,
    ErrorBody,
    ErrorResponse,
    OverloadedError,
    QueueFullError,
    ServiceError,
    UnauthorizedError,
    exception_handler,
)
from service.logging import configure_logging, log_event
from service.metrics import ServiceMetrics
from service.schemas import classify_request_schema
from service.settings import Settings

logger = logging.getLogger("textclf.service")

EngineFactory = Callable[[Bundle, Settings], Engine]
WARMUP_TEXTS = (
    "warm up",
    "we need water and food in the village after the flood",
    "a longer warm-up message so the first real request of this length does not pay for allocating buffers "
    "inside onnx runtime",
)
CLASSIFY_ROUTE = "/classify"
INFO_ROUTE = "/info"
# Routes that need the API key when one is configured. The probes, /metrics, the page and /schema stay open:
# they carry no model output, and probes and Prometheus hold no key.
PROTECTED_ROUTES = frozenset({CLASSIFY_ROUTE, INFO_ROUTE})
SECURITY_SCHEME = "apiKey"
ERROR_SCHEMA_REF = "#/components/schemas/ErrorResponse"
_REQUEST_ID_MAX = 128
_REQUEST_ID_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def onnx_engine_factory(bundle: Bundle, settings: Settings) -> Engine:
    from core.engine import OnnxEngine

    return OnnxEngine(bundle, intra_op_threads=settings.ort_threads or None)


def _request_id(scope: Scope) -> str:
    """The client's X-Request-ID when short and plain (it goes into logs and headers), else a new one."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if 0 < len(candidate) <= _REQUEST_ID_MAX and set(candidate) <= _REQUEST_ID_ALLOWED:
                return candidate
            break
    return secrets.token_hex(8)


def _authorization(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return bytes(value)
    return None


def auth_rejection(rt: Runtime, scope: Scope) -> UnauthorizedError | None:
    """401 unless the request carries ``Authorization: Bearer <the configured key>``; None when no key is
    configured or the key matches.

    The comparison is constant-time (``hmac.compare_digest``). Neither the key nor what the client sent goes
    into the answer, the metrics or the log; refusals are counted as ``auth_missing`` (no header, another
    scheme, no credentials) or ``auth_wrong`` (a Bearer key that does not match).
    """
    if not rt.api_key or scope.get("method") == "OPTIONS":
        return None  # no key configured; CORS preflights carry no credentials by design
    header = _authorization(scope)
    scheme, _, credentials = (header or b"").strip().partition(b" ")
    credentials = credentials.strip()
    if header is None or not header.strip():
        message = "this service needs an API key: send the header `Authorization: Bearer <key>`"
    elif scheme.lower() != b"bearer":
        message = "the Authorization header must use the Bearer scheme: `Authorization: Bearer <key>`"
    elif not credentials:
        message = "the Authorization header holds no key: send `Authorization: Bearer <key>`"
    elif hmac.compare_digest(credentials, rt.api_key):
        return None
    else:
        rt.metrics.rejections.labels(reason="auth_wrong").inc()
        return UnauthorizedError("the API key is not valid", detail=None, invalid_token=True)
    rt.metrics.rejections.labels(reason="auth_missing").inc()
    return UnauthorizedError(message, detail=None)


def early_rejection(rt: Runtime) -> ServiceError | None:
    """Why a new POST /classify must be refused before its body is read, or None to let it in.

    Refusing here costs no body read and no JSON decode, so under overload the event loop's time goes to the
    requests that will be answered: the batcher's queue is full (429 queue_full), or ``max_in_flight``
    requests are already being handled (429 overloaded) — which also bounds the requests still reading or
    decoding their body, which the queue does not see.
    """
    batcher = rt.batcher
    if batcher is not None and batcher.accepting and batcher.pending >= batcher.queue_size:
        rt.metrics.rejections.labels(reason="queue_full").inc()
        return QueueFullError(
            "too many requests queued; retry after a moment", detail={"queue_size": batcher.queue_size}
        )
    if rt.classify_in_flight >= rt.settings.in_flight_limit:
        rt.metrics.rejections.labels(reason="in_flight").inc()
        return OverloadedError(
            "too many requests in flight; retry after a moment",
            detail={"max_in_flight": rt.settings.in_flight_limit},
        )
    return None


async def send_error(send: Send, error: ServiceError) -> None:
    """Answer ``error`` in the one JSON error shape straight on the ASGI channel (no body read)."""
    body = msgspec.json.encode(
        ErrorResponse(error=ErrorBody(type=error.type, message=error.message, detail=error.detail))
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.response_headers().items()
    ]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def request_middleware(app: ASGIApp) -> ASGIApp:
    """Per routed request: request id, X-Total-Time, in-flight gauge, request metrics, one JSON log line;
    for POST /classify, the arrival time (the deadline counts from it) and the early refusals.

    Litestar runs route middleware after routing, so unknown paths never get here and never add a series.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        rt = runtime(scope["litestar_app"].state)
        metrics = rt.metrics
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        request_id = _request_id(scope)
        state["request_id"] = request_id
        state["arrived_at"] = started
        route = scope.get("path_template") or "unmatched"
        method = scope.get("method", "GET")
        status = 500
        classify = route == CLASSIFY_ROUTE and method == "POST"

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableScopeHeaders.from_message(message)
                headers["X-Request-ID"] = request_id
                headers["X-Total-Time"] = f"{(time.perf_counter() - started) * 1000:.3f}"
            await send(message)

        metrics.in_flight.inc()
        # The key is checked first: a stranger learns nothing, not even whether the queue is full.
        refusal: ServiceError | None = auth_rejection(rt, scope) if route in PROTECTED_ROUTES else None
        if refusal is None and classify:
            refusal = early_rejection(rt)
        if classify and refusal is None:
            rt.classify_in_flight += 1
        try:
            if refusal is not None:
                metrics.errors.labels(type=refusal.type).inc()
                state["error_type"] = refusal.type
                await send_error(send_with_headers, refusal)
            else:
                await app(scope, receive, send_with_headers)
        finally:
            metrics.in_flight.dec()
            if classify and refusal is None:
                rt.classify_in_flight -= 1
            duration = time.perf_counter() - started
            metrics.requests.labels(route=route, method=method, status=str(status)).inc()
            metrics.request_duration.labels(route=route, method=method).observe(duration)
            fields: dict[str, Any] = {
                "event": "request",
                "request_id": request_id,
                "route": route,
                "method": method,
                "status": status,
                "duration_seconds": round(duration, 6),
            }
            for key in ("num_texts", "batch_size", "error_type"):
                if key in state:
                    fields[key] = state[key]
            if rt.settings.log_request_text and "texts" in state:
                fields["texts"] = state["texts"]
            logger.info("request", extra={"fields": fields})

    return middleware


def _on_error(request: Any, error: ServiceError) -> None:
    """Count every error response by type; log unrouted ones (404/405), which skip the request middleware."""
    rt = runtime(request.app.state)
    rt.metrics.errors.labels(type=error.type).inc()
    state = request.scope.setdefault("state", {})
    state["error_type"] = error.type
    if "path_template" not in request.scope:
        request_id = _request_id(request.scope)
        state["request_id"] = request_id
        logger.info(
            "request",
            extra={
                "fields": {
                    "event": "request",
                    "request_id": request_id,
                    "route": "unmatched",
                    "method": request.scope.get("method"),
                    "status": error.status_code,
                    "error_type": error.type,
                }
            },
        )


def warm_up(engine: Engine) -> None:
    """One inference over a few lengths; also checks the model's outputs against the manifest's labels.

    Raises:
        BundleError: the model's output does not have one finite score per manifest label.
    """
    labels = engine.manifest.labels
    tokenized = engine.tokenize(list(WARMUP_TEXTS), truncate=True)
    scores = np.asarray(engine.infer(tokenized))
    if scores.ndim != 2 or scores.shape != (len(WARMUP_TEXTS), len(labels)):
        raise BundleError(
            "model.onnx",
            f"model outputs shape {tuple(scores.shape)}; the manifest lists {len(labels)} labels",
            field="labels",
        )
    if not np.isfinite(scores).all():
        raise BundleError("model.onnx", "warm-up produced non-finite scores", field="output")
    engine.postprocess(scores)


async def load_model(rt: Runtime, engine_factory: EngineFactory) -> None:
    """Load, verify, warm up, start the batcher; on failure stay not ready and say why in one log line."""
    settings = rt.settings
    started = time.perf_counter()
    try:
        bundle = await asyncio.to_thread(load_bundle, settings.model_dir)
        await asyncio.to_thread(verify_files, bundle)
        engine = await asyncio.to_thread(engine_factory, bundle, settings)
        await asyncio.to_thread(warm_up, engine)
    except BundleError as exc:
        rt.status, rt.reason = "not_ready", str(exc)
        log_event(
            logger,
            "bundle_invalid",
            f"model bundle rejected: {exc}",
            logging.ERROR,
            file=exc.path,
            field=exc.field,
            reason=exc.reason,
        )
        return
    except Exception as exc:
        rt.status, rt.reason = "not_ready", f"model failed to load: {exc!r}"
        log_event(
            logger,
            "model_load_failed",
            f"model failed to load from {settings.model_dir}: {exc!r}",
            logging.ERROR,
            model_dir=str(settings.model_dir),
            cause=repr(exc),
        )
        return
    manifest = bundle.manifest
    batcher = Batcher(
        engine,
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        queue_size=settings.queue_size,
        max_wait_ms=settings.max_wait_ms,
        metrics=rt.metrics,
    )
    batcher.start()
    rt.engine, rt.batcher, rt.manifest = engine, batcher, manifest
    rt.metrics.set_model(
        manifest.name, manifest.version, manifest.quantization.mode, manifest.labels, manifest.label_prior
    )
    rt.status, rt.reason = "ok", None
    rt.metrics.ready.set(1)
    log_event(
        logger,
        "ready",
        f"serving {manifest.name} {manifest.version}",
        model=manifest.name,
        version=manifest.version,
        problem_type=manifest.problem_type,
        quantization=manifest.quantization.mode,
        load_seconds=round(time.perf_counter() - started, 3),
    )
    if rt.announce:
        print(ready_line(settings, manifest.name, manifest.version), file=sys.stderr, flush=True)


def ready_line(settings: Settings, name: str, version: str) -> str:
    """The one plain (non-JSON) line ``python -m service`` prints once the model is ready: where to go."""
    everywhere = settings.host in ("0.0.0.0", "::", "")
    host = "127.0.0.1" if everywhere else settings.host
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{settings.port}"
    notes = [f"page: {url}/", f"docs: {url}/schema/swagger"]
    if everywhere:
        notes.append(f"listening on all interfaces ({settings.host})")
    if settings.auth_enabled:
        notes.append("API key required on /classify and /info")
    return f"textclf: serving {name} {version} at {url} ({'; '.join(notes)})"


def _start_metrics_server(rt: Runtime) -> Any:
    from prometheus_client import start_http_server

    settings = rt.settings
    try:
        server, _thread = start_http_server(
            settings.metrics_port, addr=settings.host, registry=rt.metrics.exposition_registry()
        )
    except OSError as exc:
        # With several workers only the first binds the port; its view aggregates every worker.
        log_event(logger, "metrics_port_busy", f"metrics port not bound: {exc}", logging.WARNING)
        return None
    log_event(logger, "metrics_server", f"metrics on {settings.host}:{settings.metrics_port}")
    return server


def create_app(
    settings: Settings | None = None, engine_factory: EngineFactory | None = None, *, announce: bool = False
) -> Litestar:
    """Build the service for ``settings`` (default: from ``TEXTCLF_*`` environment variables).

    Args:
        settings: Service settings.
        engine_factory: Builds the engine from a verified bundle (tests pass a fake; default ONNX Runtime).
        announce: Print one plain line with the URL on stderr once the model is ready (the CLI does).
    """
    settings = settings or Settings.from_env()
    factory = engine_factory or onnx_engine_factory
    metrics = ServiceMetrics(error_types=ERROR_TYPES)
    page_path = controllers.STATIC_DIR / "index.html"
    rt = Runtime(
        settings=settings,
        metrics=metrics,
        page=page_path.read_bytes(),
        api_key=settings.api_key.encode("ascii"),
        announce=announce,
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        log_event(
            logger,
            "startup",
            "starting",
            model_dir=str(settings.model_dir),
            host=settings.host,
            port=settings.port,
            limits=settings.public(),
            api_key="on" if settings.auth_enabled else "off",
        )
        loader = asyncio.create_task(load_model(rt, factory), name="textclf-load-model")
        metrics_server = _start_metrics_server(rt) if settings.metrics_port else None
        try:
            yield
        finally:
            rt.status, rt.reason = "shutting_down", "the service is shutting down"
            metrics.ready.set(0)
            log_event(logger, "shutdown", "shutting down: draining admitted requests")
            if not loader.done():
                loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
            if rt.batcher is not None:
                await rt.batcher.stop(settings.shutdown_timeout_seconds)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            log_event(logger, "stopped", "stopped")

    route_handlers: list[Any] = [
        controllers.ClassifyController,
        controllers.HealthController,
        controllers.info,
        controllers.page,
        controllers.swagger_asset,
    ]
    if not settings.metrics_port:
        route_handlers.append(controllers.metrics_endpoint)

    app = Litestar(
        route_handlers=route_handlers,
        lifespan=[lifespan],
        middleware=[request_middleware],
        exception_handlers={Exception: exception_handler},
        request_max_body_size=settings.max_body_bytes,
        cors_config=CORSConfig(allow_origins=list(settings.cors_origins)) if settings.cors_origins else None,
        openapi_config=OpenAPIConfig(
            title="textclf",
            version="0.1.0",
            description="Text classification with ONNX Runtime. Errors: {error: {type, message, detail}}.",
            path="/schema",
            render_plugins=[swagger_render_plugin()],
        ),
        state=_initial_state(rt),
        logging_config=None,
        debug=False,
    )
    document_classify_request(app, settings)
    if settings.auth_enabled:
        document_api_key(app)
    return app


def swagger_render_plugin() -> SwaggerRenderPlugin:
    """Swagger UI with its script and style served by this app (``controllers.swagger_asset``), not a CDN, so
    /schema/swagger works offline. The files come from the pinned ``swagger-ui-bundle-v2`` package."""
    assets = controllers.SWAGGER_ASSETS_PATH
    return SwaggerRenderPlugin(
        version=controllers.swagger_ui_version(),
        js_url=f"{assets}/swagger-ui-bundle.js",
        css_url=f"{assets}/swagger-ui.css",
        standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
        # Litestar's default favicon is on a CDN too.
        favicon=f"<link rel='icon' type='image/png' href='{assets}/favicon-32x32.png'>",
    )


def document_api_key(app: Litestar) -> None:
    """Declare the Bearer key in the OpenAPI document (scheme only, never the key) and its 401 on the
    protected operations, so clients and Swagger UI's "Authorize" button know to send it."""
    schema = app.openapi_schema
    components = schema.components
    components.security_schemes = {
        SECURITY_SCHEME: SecurityScheme(
            type="http",
            scheme="bearer",
            description="The operator's API key: `Authorization: Bearer <key>`.",
        )
    }
    unauthorized = OpenAPIResponse(
        description="unauthorized: no `Authorization: Bearer` key, or a wrong one (WWW-Authenticate: Bearer)",
        content={"application/json": OpenAPIMediaType(schema=Reference(ERROR_SCHEMA_REF))},
    )
    for path, method in ((CLASSIFY_ROUTE, "post"), (INFO_ROUTE, "get")):
        path_item = (schema.paths or {}).get(path)
        operation = getattr(path_item, method, None) if path_item is not None else None
        if operation is None:
            continue
        operation.security = [{SECURITY_SCHEME: []}]
        operation.responses = {**(operation.responses or {}), "401": unauthorized}


def document_classify_request(app: Litestar, settings: Settings) -> None:
    """Put the strict request schema (with this app's limits) on POST /classify in the OpenAPI document.

    The handler takes no ``data`` parameter (the body is decoded once, strictly, by the handler), so
    Litestar documents no body; the schema is built here instead, where the run-time limits are known.
    """
    path_item = (app.openapi_schema.paths or {}).get(CLASSIFY_ROUTE)
    operation = path_item.post if path_item is not None else None
    if operation is None:
        return
    schema = classify_request_schema(max_text_chars=settings.max_text_chars, max_items=settings.max_items)
    components = app.openapi_schema.components
    if components.schemas is None:
        components.schemas = {}
    components.schemas["ClassifyRequest"] = schema
    operation.request_body = RequestBody(
        content={
            "application/json": OpenAPIMediaType(schema=Reference("#/components/schemas/ClassifyRequest"))
        },
        required=True,
        description="One text or a list of texts.",
    )


def _initial_state(rt: Runtime) -> Any:
    from litestar.datastructures import State

    return State({"runtime": rt, "on_error": _on_error, "max_body_bytes": rt.settings.max_body_bytes})


def create_app_from_env() -> Litestar:
    """Entry point for uvicorn worker processes (``--workers`` > 1): settings come from ``TEXTCLF_*``."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings, announce=True)
