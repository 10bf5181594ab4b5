"""/healthz: no auth; answers 200 when the database answers."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from server.deps import SessionDep
from server.errors import ApiError
from server.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(session: SessionDep) -> Health:
    try:
        session.execute(text("SELECT 1"))
    except Exception as exc:
        raise ApiError(503, f"database unavailable: {type(exc).__name__}", type="server_error",
                       code="database_unavailable") from None
    return Health()
