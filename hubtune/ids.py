"""Public ids: a prefix plus a time-ordered random part, so that sorting by id sorts by creation."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """`prefix-` + 10 chars of milliseconds + 14 random chars (a ULID in lower case)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(9), "big")
    return f"{prefix}-{_encode(millis, 10)}{_encode(rand, 14)}"
