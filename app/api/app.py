"""create_app(): wire settings, metrics, registry and engine into a FastAPI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from app.api.errors import ERRORS, install_error_handlers
from app.api.middleware import BodySizeLimit, MethodsMiddleware, RequestMetrics, SecurityHeaders
from app.api.routes import classes, classify, health, metrics, models
from app.config import Settings
from app.images import ImageTooLargeError
from app.metrics import Metrics
from app.models import FixedRepository, Repository, default_model_name
from app.registry import open_registry
from app.service import Service
from app.web import docs as docs_page
from app.web import router as web_router

if TYPE_CHECKING:
    from app.engine.engine import Engine

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 1024  # boundary, part headers and a few small fields


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    load_engine: Callable[[], Engine] | None = None,
    repository: Repository | None = None,
) -> FastAPI:
    """The service over a model `repository` (app/models.py; vpt-serve gives the artifact one), or one
    ready `engine`, or `load_engine` to load one engine in the background at start-up.

    /livez answers at once; /readyz turns 200 after loading, restoring every model's registered
    classes and one warm-up forward pass each.
    """
    metrics_ = Metrics()
    if repository is None:
        repository = FixedRepository(default_model_name(settings, []), engine, load_engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = open_registry(settings.registry_path, legacy_model=repository.default)
        service = Service(settings, metrics_, registry, repository)
        app.state.service = service
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="vpt",
        summary="Uncertainty-aware image classification with variational prompt tuning of CLIP",
        lifespan=lifespan,
        docs_url=None,  # app.web.docs serves Swagger UI from this server, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    routers = (
        classify.router,
        classes.router,
        models.router,
        classes.model_router,
        health.router,
        metrics.router,
        web_router,
        docs_page.router,
    )
    for router in routers:
        app.include_router(router)
    too_large = ERRORS[ImageTooLargeError][1].format(
        max_image_bytes=settings.max_image_bytes, max_image_pixels=settings.max_image_pixels
    )
    routes = [route for router in (app.router, *routers) for route in router.routes if getattr(route, "methods", None)]
    app.add_middleware(MethodsMiddleware, routes=routes)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_image_bytes + MULTIPART_OVERHEAD, detail=too_large)
    app.add_middleware(SecurityHeaders)
    if "*" not in settings.allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(RequestMetrics, metrics=metrics_)  # outermost: also counts 413s from the limit
    _document_limits(app, settings)
    return app


def _document_limits(app: FastAPI, settings: Settings) -> None:
    """Put what comes from settings into the OpenAPI schema (FastAPI only knows the static parts): the
    limits, and the bearer scheme only when a token is set (an open server asks for none)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            names = schema["components"]["schemas"]["NamesIn"]["properties"]["names"]
            names["maxItems"] = settings.max_names_per_call
            for param in schema["paths"]["/classify"]["post"]["parameters"]:
                if param["name"] == "samples":
                    for branch in param["schema"].get("anyOf", [param["schema"]]):
                        if branch.get("type") == "integer":
                            branch["maximum"] = settings.max_samples
            if settings.token is None:
                schema["components"].pop("securitySchemes", None)
                for operations in schema["paths"].values():
                    for operation in operations.values():
                        operation.pop("security", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
