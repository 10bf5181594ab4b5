"""`/` (the dashboard page) and `/dashboard/login|session|logout`, which trade an API key for a signed
session cookie and hand the page its CSRF token. The key itself is never stored in the browser."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel

from hubtune.keys import lookup_key
from hubtune.models import ApiKey
from hubtune.settings import Settings
from server.deps import CurrentKey, SessionDep, SettingsDep
from server.errors import bad_request, unauthorized
from server.session import COOKIE_NAME, csrf_token, make_cookie, session_secret

router = APIRouter(include_in_schema=False)
INDEX = Path(__file__).parent / "static" / "index.html"


class Login(BaseModel):
    api_key: str


class SessionInfo(BaseModel):
    owner: str
    is_admin: bool
    key_prefix: str
    csrf_token: str
    # Where the page links published models: the hf endpoint's web address; None for the local hub folder.
    hub_base_url: str | None = None


@router.get("/")
def index() -> FileResponse:
    return FileResponse(INDEX, headers={"Cache-Control": "no-store"})


def _info(key: ApiKey, secret: bytes, cookie: str, settings: Settings) -> SessionInfo:
    hub = (settings.hub_endpoint or "https://huggingface.co").rstrip("/") if settings.hub_backend == "hf" else None
    return SessionInfo(owner=key.owner, is_admin=key.is_admin, key_prefix=key.prefix,
                       csrf_token=csrf_token(secret, cookie), hub_base_url=hub)


@router.post("/dashboard/login", response_model=SessionInfo)
def login(body: Login, response: Response, session: SessionDep, settings: SettingsDep) -> SessionInfo:
    key = body.api_key.strip()
    if not key:
        raise bad_request("Enter an API key.", param="api_key", code="missing_api_key")
    row = lookup_key(session, key) if "\x00" not in key else None
    if row is None:
        raise unauthorized("Incorrect API key.")
    secret = session_secret(settings)
    max_age = int(settings.session_hours * 3600)
    cookie = make_cookie(secret, key_id=row.id, max_age=max_age)
    response.set_cookie(COOKIE_NAME, cookie, max_age=max_age, httponly=True, samesite="strict",
                        secure=settings.session_cookie_secure, path="/")
    return _info(row, secret, cookie, settings)


@router.get("/dashboard/session", response_model=SessionInfo)
def current_session(request: Request, key: CurrentKey, settings: SettingsDep) -> SessionInfo:
    cookie = request.cookies.get(COOKIE_NAME)
    if not cookie:  # a bearer key works for the API, but the page needs a session
        raise unauthorized("No dashboard session; log in with your API key.")
    return _info(key, session_secret(settings), cookie, settings)


@router.post("/dashboard/logout", status_code=204)
def logout(_key: CurrentKey, response: Response) -> Response:  # CurrentKey checks the CSRF token
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response
