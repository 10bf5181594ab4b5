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
from server.errors import ApiError, unauthorized
from server.session import COOKIE_NAME, CSRF_HEADER, SAFE_METHODS, csrf_ok, read_cookie, session_secret

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
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    if (credentials is None or not credentials.credentials) and COOKIE_NAME in request.cookies:
        return _key_from_cookie(request, session)
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


def _key_from_cookie(request: Request, session: Session) -> ApiKey:
    """The dashboard's session cookie (server/session.py) instead of a bearer key; anything but a read
    must also carry the session's CSRF token."""
    secret = session_secret(request.app.state.settings)
    cookie = request.cookies[COOKIE_NAME]
    key_id = read_cookie(secret, cookie)
    row = session.get(ApiKey, key_id) if key_id else None
    if row is None or row.revoked_at is not None:
        raise unauthorized("Your dashboard session has expired; log in again with your API key.")
    if request.method not in SAFE_METHODS and not csrf_ok(secret, cookie, request.headers.get(CSRF_HEADER)):
        raise ApiError(403, f"Missing or invalid {CSRF_HEADER} header for this session.", code="csrf_failed")
    return row


CurrentKey = Annotated[ApiKey, Depends(get_current_key)]
