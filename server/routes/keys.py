"""/v1/keys: API keys, for admin keys only (403 for any other). A new key is shown once, in the answer to
its creation; afterwards only its prefix. `namespaces` are the hub namespaces the key may write to beyond
its owner name through the server's own hub access (hubtune.namespaces); PATCH replaces them, and jobs the
key created see the change when they publish. DELETE revokes the key."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import select

from hubtune.keys import issue_key, revoke, set_namespaces
from hubtune.models import ApiKey
from server.deps import CurrentKey, SessionDep
from server.errors import ApiError, bad_request, not_found

router = APIRouter(prefix="/keys", tags=["keys"])


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
Namespaces = Annotated[list[Text], Field(max_length=100)]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: Text = Field(min_length=1, max_length=128)
    name: Text = Field(default="", max_length=128)
    admin: bool = False
    namespaces: Namespaces = []


class KeyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespaces: Namespaces


class KeyPublic(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    owner: str
    prefix: str
    admin: bool
    namespaces: list[str]
    created_at: int
    revoked_at: int | None
    key: str | None = None  # the secret: in the answer to POST only

    @classmethod
    def of(cls, row: ApiKey, secret: str | None = None) -> KeyPublic:
        return cls(id=row.id, name=row.name, owner=row.owner, prefix=row.prefix, admin=row.is_admin,
                   namespaces=list(row.namespaces or []), created_at=int(row.created_at),
                   revoked_at=int(row.revoked_at) if row.revoked_at is not None else None, key=secret)


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyPublic]
    has_more: bool = False


def require_admin(key: CurrentKey) -> ApiKey:
    # A dependency, so a non-admin key gets its 403 before the body is even read.
    if not key.is_admin:
        raise ApiError(403, "Only an admin key can manage API keys.", code="forbidden")
    return key


AdminKey = Annotated[ApiKey, Depends(require_admin)]


def _get(session: SessionDep, key_id: str) -> ApiKey:
    row = session.get(ApiKey, key_id) if "\x00" not in key_id else None
    if row is None:
        raise not_found("api key", key_id)
    return row


def _namespaces_error(exc: ValueError) -> ApiError:
    return bad_request(str(exc), param="namespaces", code="invalid_namespace")


@router.post("", response_model=KeyPublic)
def create_key(session: SessionDep, _admin: AdminKey, body: KeyCreate) -> KeyPublic:
    try:
        row, secret = issue_key(session, owner=body.owner, name=body.name, admin=body.admin,
                                namespaces=body.namespaces)
    except ValueError as exc:
        raise _namespaces_error(exc) from None
    session.commit()
    return KeyPublic.of(row, secret)


@router.get("", response_model=KeyList)
def list_keys(session: SessionDep, _admin: AdminKey, owner: str | None = None) -> KeyList:
    stmt = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    if owner:
        stmt = stmt.where(ApiKey.owner == owner)
    return KeyList(data=[KeyPublic.of(r) for r in session.execute(stmt).scalars()])


@router.patch("/{key_id}", response_model=KeyPublic)
def update_key(session: SessionDep, _admin: AdminKey, key_id: str, body: KeyUpdate) -> KeyPublic:
    row = _get(session, key_id)
    try:
        set_namespaces(row, body.namespaces)
    except ValueError as exc:
        raise _namespaces_error(exc) from None
    session.commit()
    return KeyPublic.of(row)


@router.delete("/{key_id}", response_model=KeyPublic)
def revoke_key(session: SessionDep, _admin: AdminKey, key_id: str) -> KeyPublic:
    row = _get(session, key_id)
    revoke(row)
    session.commit()
    return KeyPublic.of(row)
