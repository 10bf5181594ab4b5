"""Artifact storage (DESIGN §4): uploaded files, checkpoints and trained artifacts.

The data dir by default (LocalStorage: one machine), or S3-compatible object storage when
HUBTUNE_STORAGE_URL is set (S3Storage: machines that share no file system). Callers get whole, checked
local paths either way; open_storage() picks the backend from the settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubtune.storage.base import Storage, StorageCorrupt, StoredFile, StorageUnavailable
from hubtune.storage.lines import LineTooLong, TooLarge
from hubtune.storage.local import LocalStorage

if TYPE_CHECKING:
    from hubtune.settings import Settings

__all__ = ["LineTooLong", "LocalStorage", "Storage", "StorageCorrupt", "StorageUnavailable", "StoredFile",
           "TooLarge", "open_storage"]


def open_storage(settings: Settings) -> Storage:
    if not settings.storage_url:
        return LocalStorage(settings.storage_dir)
    from hubtune.storage.s3 import S3Storage

    return S3Storage(settings.storage_url, local_root=settings.data_dir.resolve(),
                     cache_max_bytes=settings.cache_max_bytes, retry_seconds=settings.storage_retry_seconds)
