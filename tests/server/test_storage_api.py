"""The files API over object storage (a real SeaweedFS): what is uploaded is in the store, streams back
whole, and a store that does not answer is a clear 503 with nothing half-written."""

from __future__ import annotations

from hubtune.storage.s3 import S3Storage
from tests.server.apitest_helpers import TRAIN_JSONL, assert_error, auth, make_env, upload


def test_files_live_in_object_storage(postgres_url, s3_env, tmp_path):
    env = make_env(postgres_url, tmp_path / "server", storage_url=s3_env)
    store: S3Storage = env.app.state.storage
    key = env.key()
    f = upload(env.client, key, name="tickets.jsonl")
    obj = store.client.get_object(Bucket=store.bucket, Key=store.file_key(f["id"]))
    assert obj["Body"].read() == TRAIN_JSONL
    assert not (tmp_path / "server" / "storage").exists()  # nothing in the data dir's store

    r = env.client.get(f"/v1/files/{f['id']}/content", headers=auth(key))
    assert r.status_code == 200 and r.content == TRAIN_JSONL
    assert r.headers["content-disposition"] == 'attachment; filename="tickets.jsonl"'

    assert env.client.delete(f"/v1/files/{f['id']}", headers=auth(key)).status_code == 200
    assert store.read_file(f["id"]) is None


def test_an_unreachable_store_is_a_503_and_stores_nothing(postgres_url, s3_env, seaweed, tmp_path):
    env = make_env(postgres_url, tmp_path / "server", storage_url=s3_env, storage_retry_seconds=2)
    key = env.key()
    seaweed.stop()
    try:
        r = env.client.post("/v1/files", headers=auth(key), files={"file": ("t.jsonl", TRAIN_JSONL)},
                            data={"purpose": "fine-tune"})
    finally:
        seaweed.start()
    error = assert_error(r, 503, code="storage_unavailable")
    assert "nothing was stored" in error["message"] and r.headers["retry-after"] == "30"
    assert env.client.get("/v1/files", headers=auth(key)).json()["data"] == []
