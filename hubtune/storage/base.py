"""What every artifact store offers: uploaded files, a job's checkpoints, its trained artifact.

Writers hand over whole local files and folders; readers get a whole, checked local copy. So the
training engine and the hub client only ever see local paths, whichever store is behind them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hubtune.storage.lines import LineCounter, TooLarge

CHUNK = 1 << 20


class StorageUnavailable(RuntimeError):
    """The store did not answer within its retry budget. Nothing was written; the work can be retried."""


class StorageCorrupt(RuntimeError):
    """A stored object's bytes do not match the checksum written with it."""


@dataclass(frozen=True)
class StoredFile:
    size: int
    sha256: str


class Storage(ABC):
    """One job's bytes, keyed by file id and job id. `ref`s are what the job row keeps (artifact_path,
    a checkpoint's path): a folder path on the local store, an s3:// URL on object storage."""

    remote: bool = False

    # --- uploaded files ---
    @abstractmethod
    def save_file(self, file_id: str, src: BinaryIO, *, max_bytes: int, max_line_bytes: int = 0) -> StoredFile:
        """Store `src` whole or not at all; TooLarge past `max_bytes`, LineTooLong past `max_line_bytes`."""

    @abstractmethod
    def put_file(self, file_id: str, path: Path) -> None:
        """Store a file already on disk (a hub dataset pinned at a commit); a second put is a no-op."""

    @abstractmethod
    def local_file(self, file_id: str) -> Path | None:
        """A whole, checked local copy of a stored file to read; None when there is no such file."""

    @abstractmethod
    def read_file(self, file_id: str) -> Iterator[bytes] | None:
        """The file's bytes in chunks (streamed), or None when there is no such file."""

    @abstractmethod
    def delete_file(self, file_id: str) -> None: ...

    # --- checkpoints: the trainer writes them into a local folder; keep_checkpoint stores one ---
    @abstractmethod
    def checkpoints_dir(self, job_id: str, token: int) -> Path:
        """The local folder this lease's trainer writes checkpoints into."""

    @abstractmethod
    def keep_checkpoint(self, job_id: str, folder: Path) -> str:
        """Store a checkpoint the trainer finished writing; returns its ref."""

    @abstractmethod
    def latest_checkpoint(self, job_id: str, token: int) -> Path | None:
        """The newest complete checkpoint, as a local folder in checkpoints_dir(job_id, token), or None."""

    @abstractmethod
    def checkpoint_copy(self, ref: str) -> Path | None:
        """A local copy of a kept checkpoint (to push it to the hub), or None when it is gone."""

    # --- the trained artifact ---
    @abstractmethod
    def staging_dir(self, job_id: str, token: int) -> Path:
        """An empty local folder for this lease's artifact."""

    @abstractmethod
    def keep_artifact(self, job_id: str, staging: Path, *, token: int) -> str:
        """Store the finished artifact whole; returns its ref for the job row."""

    @abstractmethod
    def has_artifact(self, ref: str) -> bool: ...

    @abstractmethod
    def artifact_copy(self, ref: str) -> Path:
        """A local copy of a stored artifact (publish writes its card into it)."""

    def finished(self, job_id: str, token: int) -> None:
        """This lease's training is over: its local scratch may go (the store keeps what matters)."""


def spool(src: BinaryIO, dest_dir: Path, *, max_bytes: int, max_line_bytes: int, prefix: str) -> tuple[Path, StoredFile]:
    """Copy `src` into a temporary file in `dest_dir`, checking the limits as it streams; the caller
    renames or uploads it. Nothing is left behind when a limit is crossed."""
    lines = LineCounter(max_line_bytes)
    dest_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"file is larger than the limit of {max_bytes} bytes")
                lines.feed(chunk)
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp), StoredFile(size, digest.hexdigest())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def iter_path(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk
