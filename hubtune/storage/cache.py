"""The bounded local copy of what a process read from object storage (files, artifacts, checkpoints).

Entries are files or folders under <root>/<kind>/; a hit refreshes its time, and after each new entry
the least recently used ones go until the cache fits its budget. An entry used in the last
MIN_AGE_SECONDS is kept even past the budget: another process on this machine (the prepare worker
beside the train worker) may have just been handed its path.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path

MIN_AGE_SECONDS = 600.0
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,150}")


def entry_name(key: str) -> str:
    """A file name for any id or key (a pinned dataset ref holds '/' and ':')."""
    if _PLAIN.fullmatch(key):
        return key
    return "h-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Cache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    def path(self, kind: str, key: str) -> Path:
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        return folder / entry_name(key)

    def hit(self, path: Path) -> bool:
        if not path.exists():
            return False
        os.utime(path)
        return True

    def admit(self, path: Path) -> None:
        """`path` was just filled: make room for it."""
        os.utime(path)
        self.trim(keep=path)

    def trim(self, *, keep: Path | None = None) -> None:
        entries = [p for kind in self.root.iterdir() if kind.is_dir()
                   for p in kind.iterdir() if not p.name.startswith(".")] if self.root.is_dir() else []
        sized = sorted(((p.stat().st_mtime, _size(p), p) for p in entries), key=lambda e: e[0])
        total = sum(size for _, size, _ in sized)
        young = time.time() - MIN_AGE_SECONDS
        for mtime, size, path in sized:
            if total <= self.max_bytes:
                return
            if path == keep or mtime > young:
                continue
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            total -= size
