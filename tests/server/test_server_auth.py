"""Auth and owner isolation: no key / bad key -> 401; another owner's objects -> 404; admin sees all."""

from __future__ import annotations

from hubtune.models import ApiKey, Checkpoint, now
from tests.server.apitest_helpers import assert_error, auth, create_job, upload

PROTECTED = [
    ("get", "/v1/files"), ("post", "/v1/files"), ("get", "/v1/files/file-x"), ("delete", "/v1/files/file-x"),
    ("get", "/v1/files/file-x/content"), ("get", "/v1/fine_tuning/jobs"), ("post", "/v1/fine_tuning/jobs"),
    ("get", "/v1/fine_tuning/jobs/ftjob-x"), ("post", "/v1/fine_tuning/jobs/ftjob-x/cancel"),
    ("get", "/v1/fine_tuning/jobs/ftjob-x/events"), ("get", "/v1/fine_tuning/jobs/ftjob-x/checkpoints"),
]


def test_missing_or_wrong_key_is_401(env):
    good = env.key()
    for method, path in PROTECTED:
        for headers in ({}, {"Authorization": "Bearer ht-wrong"}, {"Authorization": "Basic abc"},
                        {"Authorization": "Bearer "}, {"Authorization": b"Bearer \xc3\xa9t\xc3\xa9"}):
            r = env.client.request(method, path, headers=headers)
            assert_error(r, 401, code="invalid_api_key")
    # The key itself is never echoed back whole.
    r = env.client.get("/v1/files", headers={"Authorization": "Bearer ht-secret-value-123"})
    assert "ht-secret-value-123" not in r.text
    assert env.client.get("/v1/files", headers=auth(good)).status_code == 200


def test_revoked_key_is_401(env):
    key = env.key()
    with env.session() as s:
        row = s.query(ApiKey).order_by(ApiKey.created_at.desc()).first()
        row.revoked_at = now()
        s.commit()
    assert_error(env.client.get("/v1/files", headers=auth(key)), 401, code="invalid_api_key")


def test_owner_isolation_and_admin(env):
    alice, bob, admin = env.key(), env.key(), env.key(admin=True)
    c = env.client
    f = upload(c, alice)
    job = create_job(c, alice, f["id"])
    jid = job["id"]
    with env.session() as s:
        s.add(Checkpoint(job_id=jid, step=5, path="/x", metrics={"train_loss": 1.0}, created_at=now()))
        s.commit()

    # Bob sees none of it: 404, never 403, and nothing in his lists.
    for path in (f"/v1/files/{f['id']}", f"/v1/files/{f['id']}/content", f"/v1/fine_tuning/jobs/{jid}",
                 f"/v1/fine_tuning/jobs/{jid}/events", f"/v1/fine_tuning/jobs/{jid}/checkpoints"):
        assert_error(c.get(path, headers=auth(bob)), 404)
    assert_error(c.post(f"/v1/fine_tuning/jobs/{jid}/cancel", headers=auth(bob)), 404)
    assert_error(c.post(f"/v1/fine_tuning/jobs/{jid}/pause", headers=auth(bob)), 404)
    assert_error(c.delete(f"/v1/files/{f['id']}", headers=auth(bob)), 404)
    assert c.get("/v1/files", headers=auth(bob)).json()["data"] == []
    assert c.get("/v1/fine_tuning/jobs", headers=auth(bob)).json()["data"] == []
    # ... and cannot train on Alice's file.
    r = c.post("/v1/fine_tuning/jobs", headers=auth(bob), json={"model": "org/m", "training_file": f["id"]})
    assert_error(r, 400, param="training_file", code="file_not_found")
    # Bob's failed attempts changed nothing.
    assert c.get(f"/v1/fine_tuning/jobs/{jid}", headers=auth(alice)).json()["status"] == "validating_files"
    assert c.get(f"/v1/files/{f['id']}", headers=auth(alice)).status_code == 200

    # The admin sees everything, across owners.
    bob_job = create_job(c, bob, upload(c, bob)["id"])
    for path in (f"/v1/files/{f['id']}", f"/v1/files/{f['id']}/content", f"/v1/fine_tuning/jobs/{jid}",
                 f"/v1/fine_tuning/jobs/{jid}/events", f"/v1/fine_tuning/jobs/{jid}/checkpoints"):
        assert c.get(path, headers=auth(admin)).status_code == 200, path
    listed = {j["id"] for j in c.get("/v1/fine_tuning/jobs", headers=auth(admin), params={"limit": 100}).json()["data"]}
    assert {jid, bob_job["id"]} <= listed
    assert f["id"] in {x["id"] for x in c.get("/v1/files", headers=auth(admin)).json()["data"]}
    r = c.post(f"/v1/fine_tuning/jobs/{jid}/cancel", headers=auth(admin))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["organization_id"] != bob_job["organization_id"]
