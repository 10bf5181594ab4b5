"""/v1/files: upload, list with cursors, retrieve, content, soft delete; /healthz; unknown routes."""

from __future__ import annotations

from hubtune.models import File
from tests.server.apitest_helpers import TRAIN_JSONL, assert_error, auth, upload


def test_healthz_needs_no_key(env):
    r = env.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok"}


def test_upload_retrieve_content_delete(env):
    key = env.key()
    f = upload(env.client, key, name="tickets.jsonl")
    assert f["object"] == "file" and f["id"].startswith("file-")
    assert f["bytes"] == len(TRAIN_JSONL)
    assert f["filename"] == "tickets.jsonl" and f["purpose"] == "fine-tune" and f["status"] == "processed"
    assert isinstance(f["created_at"], int)

    # Stored under settings.storage_dir, with its sha256 recorded.
    stored = env.settings.storage_dir / "files" / f["id"]
    assert stored.read_bytes() == TRAIN_JSONL
    with env.session() as s:
        row = s.get(File, f["id"])
        assert row.sha256 and row.bytes == len(TRAIN_JSONL) and row.deleted_at is None

    r = env.client.get(f"/v1/files/{f['id']}", headers=auth(key))
    assert r.status_code == 200 and r.json() == f
    r = env.client.get(f"/v1/files/{f['id']}/content", headers=auth(key))
    assert r.status_code == 200 and r.content == TRAIN_JSONL

    r = env.client.delete(f"/v1/files/{f['id']}", headers=auth(key))
    assert r.status_code == 200
    assert r.json() == {"id": f["id"], "object": "file", "deleted": True}
    assert not stored.exists()
    with env.session() as s:
        assert s.get(File, f["id"]).deleted_at is not None  # soft delete: the row stays

    assert_error(env.client.get(f"/v1/files/{f['id']}", headers=auth(key)), 404)
    assert_error(env.client.get(f"/v1/files/{f['id']}/content", headers=auth(key)), 404)
    assert_error(env.client.delete(f"/v1/files/{f['id']}", headers=auth(key)), 404)
    ids = [x["id"] for x in env.client.get("/v1/files", headers=auth(key)).json()["data"]]
    assert f["id"] not in ids


def test_list_files_pages_and_filters(env):
    key = env.key()
    made = [upload(env.client, key, name=f"f{i}.jsonl")["id"] for i in range(5)]
    r = env.client.get("/v1/files", headers=auth(key))
    body = r.json()
    assert body["object"] == "list" and body["has_more"] is False
    assert [x["id"] for x in body["data"]] == made[::-1]  # newest first by default

    seen, after = [], None
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = env.client.get("/v1/files", headers=auth(key), params=params).json()
        seen += [x["id"] for x in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == made[::-1]

    asc = env.client.get("/v1/files", headers=auth(key), params={"order": "asc", "limit": 3}).json()
    assert [x["id"] for x in asc["data"]] == made[:3] and asc["has_more"] is True
    none = env.client.get("/v1/files", headers=auth(key), params={"purpose": "batch"}).json()
    assert none["data"] == [] and none["has_more"] is False


def test_upload_errors(env_factory):
    env = env_factory(max_upload_bytes=64)
    key = env.key()
    c = env.client
    assert_error(
        c.post("/v1/files", headers=auth(key), files={"file": ("t.jsonl", b"x")}, data={"purpose": "batch"}),
        400, param="purpose",
    )
    assert_error(
        c.post("/v1/files", headers=auth(key), files={"file": ("t.jsonl", b"")}, data={"purpose": "fine-tune"}),
        400, param="file",
    )
    assert_error(
        c.post("/v1/files", headers=auth(key), files={"file": ("t.jsonl", b"x" * 65)}, data={"purpose": "fine-tune"}),
        413, param="file",
    )
    assert_error(c.post("/v1/files", headers=auth(key), data={"purpose": "fine-tune"}), 400, param="file")
    assert_error(c.post("/v1/files", headers=auth(key), files={"file": ("t.jsonl", b"x")}), 400, param="purpose")
    assert_error(
        c.post("/v1/files", headers=auth(key), data={"purpose": "fine-tune", "file": "not a file"}), 400, param="file"
    )
    # Nothing was kept of the refused uploads.
    files_dir = env.settings.storage_dir / "files"
    assert not files_dir.exists() or list(files_dir.iterdir()) == []
    assert c.get("/v1/files", headers=auth(key)).json()["data"] == []

    assert_error(c.get("/v1/files", headers=auth(key), params={"limit": 0}), 400, param="limit")
    assert_error(c.get("/v1/files", headers=auth(key), params={"order": "sideways"}), 400, param="order")


def test_unknown_routes_and_methods_use_the_error_shape(env):
    key = env.key()
    assert_error(env.client.get("/v1/nothing-here", headers=auth(key)), 404)
    assert_error(env.client.get("/nope"), 404)
    assert_error(env.client.put("/v1/files", headers=auth(key)), 405)
    assert_error(env.client.delete("/v1/fine_tuning/jobs", headers=auth(key)), 405)
    assert_error(env.client.post("/healthz"), 405)
