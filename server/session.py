"""Dashboard sessions: an API key is exchanged once for a signed session cookie (HttpOnly,
SameSite=Strict), so the key never sits in the page's JavaScript. Actions taken with the cookie need
a CSRF token derived from the same session, sent back in the X-CSRF-Token header.

The cookie holds the key's id and an expiry, signed with HMAC-SHA256 under the session secret; the key
row is re-read on every request, so revoking the key ends its sessions too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from hubtune.settings import Settings

COOKIE_NAME = "hubtune_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_secret(settings: Settings) -> bytes:
    """HUBTUNE_SESSION_SECRET, else a secret made once into <data_dir>/session.secret (mode 0600), so
    that every server process sharing the data dir accepts the same cookies."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    path = Path(settings.data_dir) / "session.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def make_cookie(secret: bytes, *, key_id: str, max_age: float, now: float | None = None) -> str:
    body = {"k": key_id, "e": int((now or time.time()) + max_age), "n": secrets.token_urlsafe(8)}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def read_cookie(secret: bytes, value: str, *, now: float | None = None) -> str | None:
    """The key id a valid, unexpired cookie names; None for anything else."""
    payload, _, signature = value.partition(".")
    if not payload or not hmac.compare_digest(signature, _sign(secret, payload)):
        return None
    try:
        body = json.loads(_unb64(payload))
    except ValueError:
        return None
    if not isinstance(body, dict) or int(body.get("e", 0)) < (now or time.time()):
        return None
    key_id = body.get("k")
    return key_id if isinstance(key_id, str) else None


def csrf_token(secret: bytes, cookie: str) -> str:
    # Bound to this very cookie: a token from another session (or none) is refused.
    return _sign(secret, "csrf:" + cookie)


def csrf_ok(secret: bytes, cookie: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(token, csrf_token(secret, cookie))
