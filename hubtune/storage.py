"""Artifact storage on a file system shared by the server and the workers (a volume in compose).

Layout: files/<file_id>, jobs/<job_id>/checkpoints/checkpoint-<step>, jobs/<job_id>/artifact/.
Writes go to a temporary name first and are renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class TooLarge(ValueError):
    pass


class LineTooLong(ValueError):
    def __init__(self, line: int, limit: int) -> None:
        super().__init__(f"line {line} is longer than the limit of {limit} bytes")
        self.line = line
        self.limit = limit


class _LineCounter:
    """Follows line lengths across chunks; raises LineTooLong naming the first (1-based) long line."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.line = 1  # the line the next byte belongs to
        self.current = 0  # bytes of that line seen so far

    def feed(self, chunk: bytes) -> None:
        if self.limit <= 0:
            return
        if self.current + len(chunk) <= self.limit:  # no line in this chunk can be too long: count only
            newlines = chunk.count(b"\n")
            self.line += newlines
            self.current = len(chunk) - chunk.rfind(b"\n") - 1 if newlines else self.current + len(chunk)
            return
        start = 0
        while (nl := chunk.find(b"\n", start)) >= 0:
            self._check(self.current + nl - start)
            self.line += 1
            self.current = 0
            start = nl + 1
        self.current += len(chunk) - start
        self._check(self.current)

    def _check(self, length: int) -> None:
        if length > self.limit:
            raise LineTooLong(self.line, self.limit)


@dataclass(frozen=True)
class StoredFile:
    path: Path
    size: int
    sha256: str


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def file_path(self, file_id: str) -> Path:
        return self.root / "files" / file_id

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def checkpoints_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "checkpoints"

    def latest_checkpoint(self, job_id: str) -> Path | None:
        """The newest complete checkpoint of a job (the trainer writes its state file last)."""
        done = [p for p in self.checkpoints_dir(job_id).glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        steps = [(int(p.name.rsplit("-", 1)[1]), p) for p in done if p.name.rsplit("-", 1)[1].isdigit()]
        return max(steps)[1] if steps else None

    def artifact_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "artifact"

    def save_file(self, file_id: str, src: BinaryIO, *, max_bytes: int, max_line_bytes: int = 0) -> StoredFile:
        """Copy `src` into place; TooLarge past `max_bytes`, LineTooLong for a line past `max_line_bytes`
        (0: no line limit). Nothing is left behind when either is raised."""
        lines = _LineCounter(max_line_bytes)
        dest = self.file_path(file_id)
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{file_id}.")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"file is larger than the limit of {max_bytes} bytes")
                    lines.feed(chunk)
                    digest.update(chunk)
                    out.write(chunk)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StoredFile(dest, size, digest.hexdigest())

    def delete_file(self, file_id: str) -> None:
        self.file_path(file_id).unlink(missing_ok=True)

    def publish_dir(self, staging: Path, dest: Path) -> None:
        """Move a finished directory into place, replacing an older one whole."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        old = dest.with_name(dest.name + ".old")
        if dest.exists():
            os.replace(dest, old)
        os.replace(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
