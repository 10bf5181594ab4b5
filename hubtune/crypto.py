"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key every hubtune process shares.

The key comes from the `HUBTUNE_SECRET_KEY` setting (any string; hashed into a Fernet key) or, when
unset, from `<data_dir>/secret.key`, generated once with mode 0600. Processes on other machines must
then share the data dir or set the same HUBTUNE_SECRET_KEY.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from hubtune.errors import JobError
from hubtune.settings import Settings

KEY_FILE = "secret.key"


class SecretUnreadable(JobError, ValueError):
    """A stored secret could not be decrypted (the key changed since it was stored, or this machine has
    another key than the one that stored it)."""

    code = "secret_unreadable"

    def __init__(self, message: str) -> None:
        super().__init__(self.code, message)


def encrypt(settings: Settings, plaintext: str) -> str:
    return _fernet(settings).encrypt(plaintext.encode()).decode()


def decrypt(settings: Settings, ciphertext: str) -> str:
    try:
        return _fernet(settings).decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "a stored hub credential cannot be decrypted with this machine's key: set the same "
            "HUBTUNE_SECRET_KEY on the server and every worker (or share the data dir), then store it again"
        ) from None


def secret_file(path: Path, make) -> str:
    """The secret in `path`, created with `make()` and mode 0600 the first time.

    Written to a temp file and hard-linked into place, so two processes starting together agree on
    one value and nobody reads a half-written file.
    """
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def _fernet(settings: Settings) -> Fernet:
    if settings.secret_key is not None:
        material = settings.secret_key.get_secret_value()
    else:
        material = secret_file(settings.data_dir.resolve() / KEY_FILE, lambda: secrets.token_urlsafe(32))
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(material.encode()).digest()))
