"""The app factory. It does not run migrations (the CLI does: `hubtune db upgrade`)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from sqlalchemy.orm import sessionmaker

import hubtune
from hubtune.db import engine_for
from hubtune.queue import make_celery
from hubtune.settings import Settings, get_settings
from hubtune.storage import open_storage
from server.errors import ERROR_RESPONSES, drop_validation_422, install_error_handlers
from server.limits import BodyLimit, BodyTooLarge, RateLimit, body_too_large
from server.dashboard import install_dashboard
from server.dashboard.security import security_headers
from server.routes import estimate, files, health, hub, jobs, keys, metrics, queues, workers


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for `settings` (default: the process settings from HUBTUNE_* variables).

    The app's database is `settings`' database. Doorbells go through the Celery app for the same
    settings: `hubtune.queue.get_celery()` (looked up at send time, so tests may monkeypatch it) when no
    settings are given or they name the process's broker, else one made for `settings`.
    `app.state.celery` may be replaced; None means get_celery().
    """
    explicit = settings is not None
    settings = settings or get_settings()
    app = FastAPI(
        title="hubtune",
        version=hubtune.__version__,
        description="Self-hosted fine-tuning for Hugging Face models, with the OpenAI fine-tuning API.",
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings
    app.state.engine = engine_for(settings.resolved_database_url)
    app.state.sessionmaker = sessionmaker(bind=app.state.engine, expire_on_commit=False)
    app.state.storage = open_storage(settings)
    app.state.celery = make_celery(settings) if explicit and _own_broker(settings) else None

    install_error_handlers(app)
    v1 = APIRouter(prefix="/v1")
    v1.include_router(files.router)
    v1.include_router(estimate.router)  # before jobs: /fine_tuning/jobs/estimate is not a job id
    v1.include_router(jobs.router)
    v1.include_router(hub.router)
    v1.include_router(queues.router)
    v1.include_router(workers.router)
    v1.include_router(keys.router)
    app.include_router(v1)
    app.include_router(health.router)
    app.include_router(metrics.router)
    install_dashboard(app)  # `/`, login, static assets
    _install_limits(app, settings)
    app.add_exception_handler(BodyTooLarge, body_too_large)
    app.middleware("http")(security_headers)  # added last: outermost, so 413s and 429s get them too
    _document_errors(app)
    return app


def _install_limits(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(BodyLimit, max_upload_bytes=settings.max_upload_bytes)
    if settings.rate_limit_per_minute:
        app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_minute)


def _document_errors(app: FastAPI) -> None:
    """The schema lists the OpenAI-shaped error answers and not FastAPI's 422, which this app never sends."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = drop_validation_422(build())
        return app.openapi_schema

    app.openapi = openapi


def _own_broker(settings: Settings) -> bool:
    """Whether `settings` send to another broker (or queue folder) than the process-wide Celery app."""
    default = get_settings()
    return (settings.resolved_broker_url, settings.queue_dir) != (default.resolved_broker_url, default.queue_dir)

