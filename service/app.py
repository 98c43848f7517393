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
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Reference,
    RequestBody,
    SecurityScheme,
)

from core.bundle import Bundle, BundleError, load_bundle, verify_files
from core.engine import Engine
from service import controllers
from service.context import RequestContext
from service.errors import ERROR_TYPES
from service.infer import Infer
from service.logging import configure_logging, log_event
from service.metrics import ServiceMetrics
from service.middleware import CLASSIFY_ROUTE, INFO_ROUTE, exception_handler, request_middleware
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
SECURITY_SCHEME = "apiKey"
ERROR_SCHEMA_REF = "#/components/schemas/ErrorResponse"


def onnx_engine_factory(bundle: Bundle, settings: Settings) -> Engine:
    from core.engine import OnnxEngine

    return OnnxEngine(bundle, intra_op_threads=settings.ort_threads or None)


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


async def load_model(infer: Infer, engine_factory: EngineFactory, *, announce: bool) -> None:
    """Load, verify, warm up, start serving; on failure stay not ready and say why in one log line."""
    settings = infer.settings
    started = time.perf_counter()
    try:
        bundle = await asyncio.to_thread(load_bundle, settings.model_dir)
        await asyncio.to_thread(verify_files, bundle)
        engine = await asyncio.to_thread(engine_factory, bundle, settings)
        await asyncio.to_thread(warm_up, engine)
    except BundleError as exc:
        infer.fail(str(exc))
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
        infer.fail(f"model failed to load: {exc!r}")
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
    infer.start(engine, manifest)
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
    if announce:
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


def _start_metrics_server(settings: Settings, metrics: ServiceMetrics) -> Any:
    from prometheus_client import start_http_server

    try:
        server, _thread = start_http_server(
            settings.metrics_port, addr=settings.host, registry=metrics.exposition_registry()
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
    infer = Infer(settings, metrics)
    page_html = (controllers.STATIC_DIR / "index.html").read_bytes()

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
        loader = asyncio.create_task(load_model(infer, factory, announce=announce), name="textclf-load-model")
        metrics_server = _start_metrics_server(settings, metrics) if settings.metrics_port else None
        try:
            yield
        finally:
            infer.begin_shutdown()
            log_event(logger, "shutdown", "shutting down: draining admitted requests")
            if not loader.done():
                loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
            await infer.drain(settings.shutdown_timeout_seconds)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
            log_event(logger, "stopped", "stopped")

    def provide_infer() -> Infer:
        return infer

    def provide_settings() -> Settings:
        return settings

    def provide_metrics() -> ServiceMetrics:
        return metrics

    def provide_page_html() -> bytes:
        return page_html

    def provide_context(request: Request[Any, Any, Any]) -> RequestContext:
        context = RequestContext.find(request.scope)
        if context is None:  # every routed request passes the request middleware, which attaches one
            raise RuntimeError("no request context: the request middleware did not run")
        return context

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
        middleware=[DefineMiddleware(request_middleware, infer=infer, metrics=metrics, settings=settings)],
        dependencies={
            "infer": Provide(provide_infer, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
            "metrics": Provide(provide_metrics, sync_to_thread=False),
            "page_html": Provide(provide_page_html, sync_to_thread=False),
            "context": Provide(provide_context, sync_to_thread=False),
        },
        exception_handlers={Exception: exception_handler(metrics, settings.max_body_bytes)},
        request_max_body_size=settings.max_body_bytes,
        cors_config=CORSConfig(allow_origins=list(settings.cors_origins)) if settings.cors_origins else None,
        openapi_config=OpenAPIConfig(
            title="textclf",
            version="0.1.0",
            description="Text classification with ONNX Runtime. Errors: {error: {type, message, detail}}.",
            path="/schema",
            render_plugins=[swagger_render_plugin()],
        ),
        # For tests and tools that hold only the app; the handlers get these through the dependencies above.
        state=State({"infer": infer, "metrics": metrics}),
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


def create_app_from_env() -> Litestar:
    """Entry point for uvicorn worker processes (``--workers`` > 1): settings come from ``TEXTCLF_*``."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings, announce=True)
