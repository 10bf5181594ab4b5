"""Object storage (hubtune/storage/s3.py) against a real S3-compatible server (SeaweedFS), as two
"machines" with data dirs of their own: whole-or-nothing writes, checksums checked on read, checkpoints
and artifacts found from another machine, a bounded cache, and outages waited out or refused cleanly."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from hubtune.storage import StorageCorrupt, StorageUnavailable, TooLarge
from hubtune.storage.cache import Cache
from hubtune.storage.s3 import S3Storage, parse_url


def machine(url: str, root: Path, **kw) -> S3Storage:
    kw.setdefault("retry_seconds", 20)
    return S3Storage(url, local_root=root, cache_max_bytes=kw.pop("cache_max_bytes", 1 << 30), **kw)


def keys(store: S3Storage) -> list[str]:
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=store.prefix + "/")
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def write_checkpoint(folder: Path, step: int, payload: bytes) -> Path:
    ckpt = folder / f"checkpoint-{step}"
    (ckpt / "nested").mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(payload)
    (ckpt / "nested" / "rng_state.pth").write_bytes(b"rng" * step)
    (ckpt / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    return ckpt


def test_a_file_streams_in_multipart_and_reads_back_checked_on_another_machine(s3_env, tmp_path):
    data = os.urandom(6 * 1024 * 1024) + b"\n"  # past the 5 MB part size set below: a multipart upload
    a = machine(s3_env, tmp_path / "a", multipart_bytes=5 * 1024 * 1024)
    stored = a.save_file("file-abc", io.BytesIO(data), max_bytes=10 << 20, max_line_bytes=0)
    assert stored.size == len(data)
    head = a.client.head_object(Bucket=a.bucket, Key=a.file_key("file-abc"))
    assert head["Metadata"]["sha256"] == stored.sha256 and "-" in head["ETag"]  # multipart ETags end in -<parts>
    assert list((tmp_path / "a" / "scratch" / "uploads").iterdir()) == []  # the spooled copy is gone

    b = machine(s3_env, tmp_path / "b")
    assert b.local_file("file-abc").read_bytes() == data
    assert b"".join(b.read_file("file-abc")) == data
    assert b.local_file("file-missing") is None and b.read_file("file-missing") is None


def test_a_file_over_a_limit_leaves_nothing_in_the_store(s3_env, tmp_path):
    a = machine(s3_env, tmp_path / "a")
    with pytest.raises(TooLarge):
        a.save_file("file-big", io.BytesIO(b"x" * 5000), max_bytes=4096)
    assert keys(a) == []
    assert list((tmp_path / "a" / "scratch" / "uploads").iterdir()) == []


def test_bytes_that_do_not_match_their_checksum_are_refused(s3_env, tmp_path):
    a = machine(s3_env, tmp_path / "a")
    a.save_file("file-x", io.BytesIO(b'{"text": "a"}\n'), max_bytes=1 << 20)
    sha = a.client.head_object(Bucket=a.bucket, Key=a.file_key("file-x"))["Metadata"]["sha256"]
    # Bit rot (or a writer that bypassed hubtune): other bytes under the same recorded checksum.
    a.client.put_object(Bucket=a.bucket, Key=a.file_key("file-x"), Body=b'{"text": "b"}\n', Metadata={"sha256": sha})
    b = machine(s3_env, tmp_path / "b")
    with pytest.raises(StorageCorrupt):
        b.local_file("file-x")
    assert not any((tmp_path / "b" / "cache").rglob("*file-x*"))  # nothing half-checked was kept
    with pytest.raises(StorageCorrupt):
        b"".join(b.read_file("file-x"))


def test_another_machine_resumes_from_the_newest_complete_checkpoint(s3_env, tmp_path):
    a = machine(s3_env, tmp_path / "a")
    folder = a.checkpoints_dir("ftjob-1", 7)
    folder.mkdir(parents=True)
    (folder / "lr_search.json").write_text('{"chosen": 0.001}')  # the search's record travels too
    refs = [a.keep_checkpoint("ftjob-1", write_checkpoint(folder, step, os.urandom(1000 + step)))
            for step in (2, 4)]
    assert refs[1] == f"{s3_env}/jobs/ftjob-1/checkpoints/checkpoint-4"
    # A checkpoint whose upload never finished (no manifest): its files are there, but it is not one.
    partial = write_checkpoint(folder, 6, b"half")
    a._upload(partial / "adapter_model.safetensors", a.key("jobs", "ftjob-1", "checkpoints", "checkpoint-6",
                                                           "adapter_model.safetensors"), "0" * 64)

    b = machine(s3_env, tmp_path / "b")
    resumed = b.latest_checkpoint("ftjob-1", 9)
    assert resumed == b.checkpoints_dir("ftjob-1", 9) / "checkpoint-4"
    for path in (folder / "checkpoint-4").rglob("*"):
        if path.is_file():
            assert (resumed / path.relative_to(folder / "checkpoint-4")).read_bytes() == path.read_bytes()
    assert (resumed.parent / "lr_search.json").read_text() == '{"chosen": 0.001}'
    assert b.latest_checkpoint("ftjob-none", 1) is None
    assert b.checkpoint_copy(refs[0]) is not None and (b.checkpoint_copy(refs[0]) / "trainer_state.json").is_file()


def test_an_artifact_is_whole_on_another_machine_and_its_scratch_goes(s3_env, tmp_path):
    a = machine(s3_env, tmp_path / "a")
    staging = a.staging_dir("ftjob-2", 11)
    (staging / "sub").mkdir(parents=True)
    (staging / "adapter_model.safetensors").write_bytes(os.urandom(5000))
    (staging / "sub" / "tokenizer.json").write_text("{}")
    expected = {p.relative_to(staging).as_posix(): p.read_bytes() for p in staging.rglob("*") if p.is_file()}
    ref = a.keep_artifact("ftjob-2", staging, token=11)
    a.finished("ftjob-2", 11)
    assert not (tmp_path / "a" / "scratch" / "jobs" / "ftjob-2" / "11").exists()

    b = machine(s3_env, tmp_path / "b")
    assert b.has_artifact(ref) and not b.has_artifact(ref.replace("artifact-11", "artifact-12"))
    copy = b.artifact_copy(ref)
    assert {p.relative_to(copy).as_posix(): p.read_bytes() for p in copy.rglob("*") if p.is_file()} == expected


def test_the_cache_keeps_to_its_budget_least_recently_used_first(tmp_path):
    cache = Cache(tmp_path, max_bytes=2500)
    paths = []
    for i, age in enumerate((3000, 2000, 1000)):  # seconds since last use; all older than MIN_AGE_SECONDS
        path = cache.path("files", f"f{i}")
        path.write_bytes(b"x" * 1000)
        os.utime(path, (time.time() - age, time.time() - age))
        paths.append(path)
    cache.hit(paths[0])  # used just now: the oldest becomes the newest
    fresh = cache.path("files", "f3")
    fresh.write_bytes(b"y" * 1000)
    cache.admit(fresh)
    assert [p.exists() for p in paths] == [True, False, False] and fresh.exists()


def test_an_outage_shorter_than_the_budget_is_waited_out(s3_env, seaweed, tmp_path):
    a = machine(s3_env, tmp_path / "a", retry_seconds=90)
    data = b'{"text": "during the outage"}\n' * 1000
    seaweed.stop()
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(
        stored=a.save_file("file-outage", io.BytesIO(data), max_bytes=1 << 20)))
    try:
        worker.start()
        time.sleep(5)
        assert worker.is_alive()  # still retrying, not failed
    finally:
        seaweed.start()
    worker.join(90)
    assert outcome["stored"].size == len(data)
    assert machine(s3_env, tmp_path / "b").local_file("file-outage").read_bytes() == data


def test_an_outage_past_the_budget_fails_cleanly_and_stores_nothing(s3_env, seaweed, tmp_path):
    a = machine(s3_env, tmp_path / "a", retry_seconds=3)
    seaweed.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="did not answer for 3 s"):
            a.save_file("file-lost", io.BytesIO(b"{}\n"), max_bytes=1 << 20)
        assert time.monotonic() - started < 30
    finally:
        seaweed.start()
    assert keys(a) == []


def test_storage_urls_are_checked():
    assert parse_url("s3://bucket/a/b/") == ("bucket", "a/b")
    for bad in ("bucket/prefix", "s3:///prefix", "gs://bucket"):
        with pytest.raises(ValueError, match="s3://bucket/prefix"):
            parse_url(bad)
