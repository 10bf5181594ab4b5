"""Request dependencies, as typed aliases: `SessionDep`, `SettingsDep`, `StorageDep`, `CurrentKey`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from hubtune.keys import lookup_key
from hubtune.models import ApiKey
from hubtune.settings import Settings
from hubtune.storage import Storage
from server.errors import unauthorized

# The key for doorbells in session.info, read by hubtune.queue when the transaction commits.
CELERY_INFO_KEY = "hubtune_celery"


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_session(request: Request) -> Iterator[Session]:
    """One session per request. Routes commit; whatever they did not commit is rolled back here."""
    session: Session = request.app.state.sessionmaker()
    celery = request.app.state.celery
    if celery is not None:
        session.info[CELERY_INFO_KEY] = celery
    try:
        yield session
    finally:
        session.close()


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StorageDep = Annotated[Storage, Depends(get_storage)]
SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")


def get_current_key(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    if credentials is None or not credentials.credentials:
        raise unauthorized(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    key = credentials.credentials.strip()
    row = lookup_key(session, key) if "\x00" not in key else None
    if row is None:
        shown = key[:6] + "..." if len(key) > 6 else "***"
        raise unauthorized(f"Incorrect API key provided: {shown}.")
    return row


CurrentKey = Annotated[ApiKey, Depends(get_current_key)]
