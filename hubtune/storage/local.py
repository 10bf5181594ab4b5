"""The data dir as artifact storage: one machine, or a file system every process shares.

Layout: files/<file_id>, jobs/<job_id>/checkpoints/checkpoint-<step>, jobs/<job_id>/artifact/.
Writes go to a temporary name first and are renamed into place, so a reader never sees half a file.
The trainer writes checkpoints in place here, so keeping one costs nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from hubtune.storage.base import Storage, StoredFile, iter_path, spool


class LocalStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def file_path(self, file_id: str) -> Path:
        return self.root / "files" / file_id

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def save_file(self, file_id: str, src: BinaryIO, *, max_bytes: int, max_line_bytes: int = 0) -> StoredFile:
        dest = self.file_path(file_id)
        tmp, stored = spool(src, dest.parent, max_bytes=max_bytes, max_line_bytes=max_line_bytes,
                            prefix=f".{file_id}.")
        os.replace(tmp, dest)
        return stored

    def put_file(self, file_id: str, path: Path) -> None:
        dest = self.file_path(file_id)
        if dest.is_file():  # same id, same bytes (a dataset pinned at a commit): reuse the copy
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)

    def local_file(self, file_id: str) -> Path | None:
        path = self.file_path(file_id)
        return path if path.is_file() else None

    def read_file(self, file_id: str) -> Iterator[bytes] | None:
        path = self.local_file(file_id)
        return iter_path(path) if path else None

    def delete_file(self, file_id: str) -> None:
        self.file_path(file_id).unlink(missing_ok=True)

    def checkpoints_dir(self, job_id: str, token: int = 0) -> Path:
        # One folder for every lease: the store is this folder (the fencing keeps a stale worker out).
        return self.job_dir(job_id) / "checkpoints"

    def keep_checkpoint(self, job_id: str, folder: Path) -> str:
        return str(folder)

    def latest_checkpoint(self, job_id: str, token: int = 0) -> Path | None:
        """The newest complete checkpoint of a job (the trainer writes its state file last)."""
        return newest_checkpoint(self.checkpoints_dir(job_id))

    def checkpoint_copy(self, ref: str) -> Path | None:
        path = Path(ref)
        return path if path.is_dir() else None

    def staging_dir(self, job_id: str, token: int) -> Path:
        staging = self.job_dir(job_id) / f"artifact.staging-{token}"
        shutil.rmtree(staging, ignore_errors=True)
        return staging

    def keep_artifact(self, job_id: str, staging: Path, *, token: int) -> str:
        """Move the finished folder into place, replacing an older one whole."""
        dest = self.job_dir(job_id) / "artifact"
        dest.parent.mkdir(parents=True, exist_ok=True)
        old = dest.with_name(dest.name + ".old")
        if dest.exists():
            os.replace(dest, old)
        os.replace(staging, dest)
        shutil.rmtree(old, ignore_errors=True)
        return str(dest)

    def has_artifact(self, ref: str) -> bool:
        return Path(ref).is_dir()

    def artifact_copy(self, ref: str) -> Path:
        return Path(ref)


def newest_checkpoint(folder: Path) -> Path | None:
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    steps = [(int(p.name.rsplit("-", 1)[1]), p) for p in done if p.name.rsplit("-", 1)[1].isdigit()]
    return max(steps)[1] if steps else None
