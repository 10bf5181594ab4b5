"""The web dashboard: one static page (our own HTML, CSS and JavaScript, no third-party code) that reads
the public REST API with a session cookie, plus the login/logout routes that make that cookie."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from server.dashboard.routes import router

STATIC = Path(__file__).parent / "static"


def install_dashboard(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
