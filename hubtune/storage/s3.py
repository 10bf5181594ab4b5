"""S3-compatible object storage (AWS S3, MinIO, Ceph, SeaweedFS, GCS in S3 mode) through boto3.

HUBTUNE_STORAGE_URL=s3://bucket/prefix; credentials, region and endpoint come from the standard AWS_*
variables (AWS_ENDPOINT_URL for a store that is not AWS), read by boto3 itself.

Layout under the prefix: files/<file_id> (a pinned dataset ref: files/h-<sha256 of the ref>);
jobs/<job_id>/checkpoints/checkpoint-<step>/... with checkpoint-<step>.manifest.json beside it, and
the job's side files (lr_search.json); jobs/<job_id>/artifact-<token>/... with its manifest.

Whole or nothing: one object is atomic in S3 (a PUT, or a multipart upload completed at the end); a
folder is complete once its manifest exists, written after every file, and a reader only trusts
folders with a manifest. Every object carries its SHA-256 (metadata for files, the manifest for
folders), checked on every read. Uploads stream from local files (multipart past MULTIPART_BYTES);
downloads stream to a temporary file renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from hubtune.storage.base import (
    CHUNK, Storage, StorageCorrupt, StoredFile, sha256_of, spool,
)
from hubtune.storage.cache import Cache, entry_name
from hubtune.storage.retry import retrying

MULTIPART_BYTES = 64 * 1024 * 1024
MANIFEST_SUFFIX = ".manifest.json"
_CHECKPOINT_MANIFEST = re.compile(r"checkpoint-(\d+)" + re.escape(MANIFEST_SUFFIX))


def parse_url(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"HUBTUNE_STORAGE_URL must look like s3://bucket/prefix, not {url!r}")
    return parsed.netloc, parsed.path.strip("/")


def make_client():
    import boto3
    from botocore.config import Config

    # Our own loop (retry.py) owns the waiting, with its budget; boto3 retries once on its own.
    return boto3.client("s3", config=Config(retries={"max_attempts": 2, "mode": "standard"},
                                            connect_timeout=5, read_timeout=60))


def _missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}


class S3Storage(Storage):
    remote = True

    def __init__(self, url: str, *, local_root: Path, cache_max_bytes: int, retry_seconds: float,
                 client: Any = None, multipart_bytes: int = MULTIPART_BYTES) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.client = client or make_client()
        self.scratch = Path(local_root) / "scratch"
        self.cache = Cache(Path(local_root) / "cache", cache_max_bytes)
        self.budget = retry_seconds
        self.multipart_bytes = multipart_bytes

    # --- names ---
    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def ref(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def key_of(self, ref: str) -> str:
        bucket, key = parse_url(ref)
        if bucket != self.bucket:
            raise ValueError(f"{ref} is not in this store's bucket {self.bucket}")
        return key

    def file_key(self, file_id: str) -> str:
        return self.key("files", entry_name(file_id))

    # --- objects ---
    def _retry(self, what: str, fn):
        return retrying(fn, what=what, budget=self.budget)

    def _upload(self, path: Path, key: str, sha256: str) -> None:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=self.multipart_bytes, multipart_chunksize=self.multipart_bytes)
        self._retry(f"upload {key}", lambda: self.client.upload_file(
            str(path), self.bucket, key, ExtraArgs={"Metadata": {"sha256": sha256}}, Config=config))

    def _put_json(self, key: str, value: Any) -> None:
        body = json.dumps(value, sort_keys=True).encode()
        self._retry(f"write {key}", lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=body))

    def _get_json(self, key: str) -> Any | None:
        def once():
            try:
                return json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            except Exception as exc:
                if _missing(exc):
                    return None
                raise
        return self._retry(f"read {key}", once)

    def _exists(self, key: str) -> bool:
        def once() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
                return True
            except Exception as exc:
                if _missing(exc):
                    return False
                raise
        return self._retry(f"look up {key}", once)

    def _download(self, key: str, dest: Path, *, sha256: str | None = None) -> bool:
        """Stream one object into `dest` (whole, checked); False when there is no such object."""
        def once() -> bool:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                if _missing(exc):
                    return False
                raise
            expected = sha256 or response.get("Metadata", {}).get("sha256")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}")
            try:
                with open(tmp, "wb") as out:
                    for chunk in response["Body"].iter_chunks(CHUNK):
                        out.write(chunk)
                if expected and sha256_of(tmp) != expected:
                    raise StorageCorrupt(f"{self.ref(key)}: its bytes do not match the SHA-256 stored with it")
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            return True
        return self._retry(f"download {key}", once)

    def _list(self, prefix: str) -> list[str]:
        """Object names directly under `prefix/` (not in sub-folders)."""
        def once() -> list[str]:
            names: list[str] = []
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix + "/", Delimiter="/"):
                names += [item["Key"][len(prefix) + 1:] for item in page.get("Contents", [])]
            return names
        return self._retry(f"list {prefix}/", once)

    def _upload_dir(self, folder: Path, key: str) -> None:
        manifest = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            digest = sha256_of(path)
            self._upload(path, f"{key}/{rel}", digest)
            manifest[rel] = {"size": path.stat().st_size, "sha256": digest}
        self._put_json(key + MANIFEST_SUFFIX, {"files": manifest})  # last: the folder now exists

    def _download_dir(self, key: str, dest: Path) -> bool:
        manifest = self._get_json(key + MANIFEST_SUFFIX)
        if manifest is None:
            return False
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}")
        try:
            for rel, meta in manifest["files"].items():
                if not self._download(f"{key}/{rel}", tmp / rel, sha256=meta["sha256"]):
                    raise StorageCorrupt(f"{self.ref(key)}: {rel} is in its manifest but not in the store")
            tmp.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True

    def _cached_dir(self, kind: str, key: str) -> Path | None:
        dest = self.cache.path(kind, key)
        if self.cache.hit(dest):
            return dest
        if not self._download_dir(key, dest):
            return None
        self.cache.admit(dest)
        return dest

    # --- uploaded files ---
    def save_file(self, file_id: str, src: BinaryIO, *, max_bytes: int, max_line_bytes: int = 0) -> StoredFile:
        tmp, stored = spool(src, self.scratch / "uploads", max_bytes=max_bytes, max_line_bytes=max_line_bytes,
                            prefix=f".{entry_name(file_id)}.")
        try:
            self._upload(tmp, self.file_key(file_id), stored.sha256)
        finally:
            tmp.unlink(missing_ok=True)
        return stored

    def put_file(self, file_id: str, path: Path) -> None:
        key = self.file_key(file_id)
        if not self._exists(key):
            self._upload(path, key, sha256_of(path))

    def local_file(self, file_id: str) -> Path | None:
        dest = self.cache.path("files", file_id)
        if self.cache.hit(dest):
            return dest
        if not self._download(self.file_key(file_id), dest):
            return None
        self.cache.admit(dest)
        return dest

    def read_file(self, file_id: str) -> Iterator[bytes] | None:
        key = self.file_key(file_id)

        def once():
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                if _missing(exc):
                    return None
                raise
        response = self._retry(f"download {key}", once)
        return None if response is None else self._checked_stream(key, response)

    def _checked_stream(self, key: str, response) -> Iterator[bytes]:
        import hashlib

        digest = hashlib.sha256()
        for chunk in response["Body"].iter_chunks(CHUNK):
            digest.update(chunk)
            yield chunk
        expected = response.get("Metadata", {}).get("sha256")
        if expected and digest.hexdigest() != expected:  # the client sees a broken download, not bad bytes
            raise StorageCorrupt(f"{self.ref(key)}: its bytes do not match the SHA-256 stored with it")

    def delete_file(self, file_id: str) -> None:
        key = self.file_key(file_id)
        self._retry(f"delete {key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    # --- checkpoints ---
    def job_scratch(self, job_id: str, token: int) -> Path:
        # A folder per lease: a stale worker on this machine (frozen, then woken after a takeover)
        # cannot touch the files of the lease that replaced it.
        return self.scratch / "jobs" / entry_name(job_id) / str(token)

    def checkpoints_dir(self, job_id: str, token: int) -> Path:
        return self.job_scratch(job_id, token) / "checkpoints"

    def keep_checkpoint(self, job_id: str, folder: Path) -> str:
        key = self.key("jobs", job_id, "checkpoints", folder.name)
        # Side files beside the checkpoints (the learning-rate search's record) go first: a resume
        # from this checkpoint on another machine needs them.
        for side in sorted(p for p in folder.parent.iterdir() if p.is_file() and not p.name.startswith(".")):
            self._upload(side, self.key("jobs", job_id, "checkpoints", side.name), sha256_of(side))
        self._upload_dir(folder, key)
        return self.ref(key)

    def latest_checkpoint(self, job_id: str, token: int) -> Path | None:
        """Download the newest complete checkpoint (and the side files) into a fresh checkpoints_dir:
        the store is the truth, whatever an earlier run on this machine left behind."""
        base = self.key("jobs", job_id, "checkpoints")
        names = self._list(base)
        steps = [int(m.group(1)) for n in names if (m := _CHECKPOINT_MANIFEST.fullmatch(n))]
        local = self.checkpoints_dir(job_id, token)
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True)
        if not steps:
            return None
        for name in names:
            if not name.endswith(MANIFEST_SUFFIX):
                self._download(f"{base}/{name}", local / name)
        dest = local / f"checkpoint-{max(steps)}"
        self._download_dir(f"{base}/checkpoint-{max(steps)}", dest)
        return dest

    def checkpoint_copy(self, ref: str) -> Path | None:
        return self._cached_dir("checkpoints", self.key_of(ref))

    # --- the trained artifact ---
    def staging_dir(self, job_id: str, token: int) -> Path:
        staging = self.job_scratch(job_id, token) / "artifact.staging"
        shutil.rmtree(staging, ignore_errors=True)
        return staging

    def keep_artifact(self, job_id: str, staging: Path, *, token: int) -> str:
        key = self.key("jobs", job_id, f"artifact-{token}")
        self._upload_dir(staging, key)
        cached = self.cache.path("artifacts", key)  # a publish on this machine needs no download
        if not cached.exists():
            os.replace(staging, cached)
            self.cache.admit(cached)
        return self.ref(key)

    def has_artifact(self, ref: str) -> bool:
        return self._exists(self.key_of(ref) + MANIFEST_SUFFIX)

    def artifact_copy(self, ref: str) -> Path:
        path = self._cached_dir("artifacts", self.key_of(ref))
        if path is None:
            raise StorageCorrupt(f"the trained artifact {ref} is not in object storage")
        return path

    def finished(self, job_id: str, token: int) -> None:
        shutil.rmtree(self.job_scratch(job_id, token), ignore_errors=True)
