"""API keys: random bearer tokens of which only the SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from hubtune.ids import new_id
from hubtune.models import ApiKey, now
from hubtune.namespaces import parse_namespaces

KEY_PREFIX = "ht-"


def hash_key(key: str) -> str:
    # The keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    session: Session, *, owner: str, name: str = "", admin: bool = False, namespaces: Iterable[str] = ()
) -> str:
    """Store a new key for `owner` and return it; it cannot be read back later. `namespaces`: hub
    namespaces it may write to beyond its owner name (hubtune.namespaces); ValueError names a bad one."""
    return issue_key(session, owner=owner, name=name, admin=admin, namespaces=namespaces)[1]


def issue_key(
    session: Session, *, owner: str, name: str = "", admin: bool = False, namespaces: Iterable[str] = ()
) -> tuple[ApiKey, str]:
    """create_key, also returning the stored row (for the admin API's answer)."""
    granted = parse_namespaces(namespaces)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), name=name, owner=owner, key_hash=hash_key(key), prefix=key[:10],
                 is_admin=admin, namespaces=granted, created_at=now())
    session.add(row)
    return row, key


def set_namespaces(row: ApiKey, namespaces: Iterable[str]) -> None:
    """Replace the key's granted namespaces. Jobs it created see the change at their publish."""
    row.namespaces = parse_namespaces(namespaces)


def revoke(row: ApiKey) -> None:
    """The key stops authenticating now; its jobs may no longer publish through the server's hub access."""
    if row.revoked_at is None:
        row.revoked_at = now()


def lookup_key(session: Session, key: str) -> ApiKey | None:
    row = session.execute(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return row
