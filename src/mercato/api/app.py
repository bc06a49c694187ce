"""The HTTP application: health endpoints now; trading and accounts come next."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from mercato.api.account_routes import router as account_router
from mercato.api.auth_routes import router as auth_router
from mercato.api.binance import install as install_binance
from mercato.api.binance.trading_routes import binance_order_direct
from mercato.api.custody_admin_routes import router as custody_admin_router
from mercato.api.deposit_routes import router as deposit_router
from mercato.api.errors import document_errors, error_response, install_error_handlers
from mercato.api.fastlane import OrderEntryApp
from mercato.api.internal_routes import router as internal_router
from mercato.api.limits import BodyLimit, JsonBodies, JsonOperations, RateLimit
from mercato.api.market_routes import router as market_router
from mercato.api.ratelimit import limiter_for
from mercato.api.trading_routes import cancel_order_direct, place_order_direct
from mercato.api.trading_routes import router as trading_router
from mercato.api.withdrawal_routes import router as withdrawal_router
from mercato.api.ws import router as ws_router
from mercato.api.ws import watch_credentials
from mercato.service import ExchangeService

# Swagger UI and ReDoc as fastapi-offline ships them: the pages work without Internet.
DOCS_ASSETS = "/docs-assets"
DOCS_ASSET_FILES = str(resources.files("fastapi_offline") / "static")

log = logging.getLogger(__name__)


def create_app(
    service: ExchangeService, on_boot_failure: Callable[[], None] | None = None
) -> FastAPI:
    """``on_boot_failure`` is called if the service cannot start (the server then exits)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Boot in the background so that /health/live answers during a long recovery.
        boot = asyncio.create_task(_boot(service, on_boot_failure), name="mercato-boot")
        watch = asyncio.create_task(watch_credentials(service), name="mercato-ws-revocations")
        try:
            yield
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            if not boot.done():
                boot.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await boot
            await service.stop()
            await limiter.close()

    app = OrderEntryApp(title="Mercato", version="0.1.0", lifespan=lifespan,
                        docs_url=None, redoc_url=None)  # served locally: add_docs  # fmt: skip
    # Order entry skips FastAPI's layers (api/fastlane.py); the documented FastAPI routes
    # below call the same functions and answer anything the fast lane does not recognise.
    app.place_handler = place_order_direct
    app.cancel_handler = cancel_order_direct
    app.binance_order_handler = binance_order_direct
    limiter = limiter_for(service.config)
    app.state.service = service
    app.state.limiter = limiter
    # No redirect_slashes: a path that matches no route answers 404 NOT_FOUND with the
    # error body, not an empty 307 to a guessed path (which a %2F in a path produced).
    app.router.redirect_slashes = False
    app.add_middleware(JsonBodies, takes_json=JsonOperations(lambda: app.openapi()))
    app.add_middleware(BodyLimit)
    app.add_middleware(RateLimit, limiter=limiter)  # outermost: refuses before anything
    install_error_handlers(app)
    document_errors(app)
    app.include_router(auth_router)
    app.include_router(account_router)
    app.include_router(trading_router)
    app.include_router(market_router)
    app.include_router(withdrawal_router)
    app.include_router(internal_router)
    app.include_router(deposit_router)
    app.include_router(ws_router)
    app.include_router(custody_admin_router)
    install_binance(app)
    add_docs(app)

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        """The process is up and serving HTTP."""
        return {"status": "live"}

    @app.get("/health/ready", tags=["health"], responses={503: {"description": "Not ready"}})
    async def ready() -> JSONResponse:
        """Ready once migrations ran, the engine recovered and the markets exist. Also
        says how far the SQL projection (history reads) is behind the engine, and why its
        process last stopped, while it is being replaced (``projection_error``)."""
        if not service.ready or service.port is None or service.projector is None:
            return error_response(503, "NOT_READY", "recovering; try again shortly")
        last_seq = service.port.last_seq
        return JSONResponse({
            "status": "ready", "last_seq": last_seq,
            "projected_seq": service.projector.cursor,
            "projection_lag": service.projector.lag(last_seq),
            "projection_error": service.projector.error,
        })  # fmt: skip

    return app


def add_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their scripts, styles and icon served
    from ``/docs-assets``: no page of the server loads anything from another host."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=DOCS_ASSET_FILES), name="docs-assets")
    favicon = f"{DOCS_ASSETS}/favicon.png"
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title="Mercato API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=favicon,
            oauth2_redirect_url=oauth2_redirect,
            # Swagger UI would send the schema's address to validator.swagger.io for a badge
            swagger_ui_parameters={"validatorUrl": None},
        )  # fmt: skip

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json", title="Mercato API - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js", redoc_favicon_url=favicon,
            with_google_fonts=False,
        )  # fmt: skip


async def _boot(service: ExchangeService, on_failure: Callable[[], None] | None) -> None:
    try:
        await service.start()
    except Exception as error:
        service.failure = error
        log.error("cannot start: %s", error)
        if on_failure is not None:
            on_failure()
