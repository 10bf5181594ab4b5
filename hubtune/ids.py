"""Public ids: a prefix plus a time-ordered random part, so that sorting by id sorts by creation."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_RAND_BITS = 70  # 14 base32 characters
_lock = threading.Lock()
_last = (0, 0)  # (millis, random part) of this process's latest id


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def _next(millis: int) -> tuple[int, int]:
    """ULID's monotonic rule: within one millisecond the random part grows, so ids made in a row sort in
    the order they were made (a list's "newest first" holds even for jobs created in the same millisecond)."""
    global _last
    with _lock:
        last_millis, last_rand = _last
        if millis <= last_millis:
            millis, rand = last_millis, last_rand + 1 + int.from_bytes(os.urandom(4), "big")
            if rand >= 1 << _RAND_BITS:  # overflow: borrow the next millisecond
                millis, rand = millis + 1, int.from_bytes(os.urandom(8), "big")
        else:
            rand = int.from_bytes(os.urandom(9), "big") >> (72 - _RAND_BITS + 1)  # leave headroom to grow
        _last = (millis, rand)
        return _last


def new_id(prefix: str) -> str:
    """`prefix-` + 10 chars of milliseconds + 14 random chars (a ULID in lower case)."""
    millis, rand = _next(time.time_ns() // 1_000_000)
    return f"{prefix}-{_encode(millis, 10)}{_encode(rand, 14)}"
