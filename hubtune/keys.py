"""API keys: random bearer tokens of which only the SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from hubtune.ids import new_id
from hubtune.models import ApiKey

KEY_PREFIX = "ht-"


def hash_key(key: str) -> str:
    # The keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, *, owner: str, name: str = "", admin: bool = False) -> str:
    """Store a new key for `owner` and return it; it cannot be read back later."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiKey(id=new_id("key"), name=name, owner=owner, key_hash=hash_key(key), prefix=key[:10], is_admin=admin)
    )
    return key


def lookup_key(session: Session, key: str) -> ApiKey | None:
    row = session.execute(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return row
