"""/v1/hub: credentials never come back and are encrypted at rest; hub webhooks start a job pinned to
the pushed commit once; the publish endpoint only re-pushes a failed job's kept artifact; webhook_url
destinations are checked."""

from __future__ import annotations

import json
import secrets

import pytest

from sqlalchemy import select

from hubtune.models import HubCredential, HubDelivery, Job
from tests.server.apitest_helpers import assert_error, auth, create_job, upload

SECRET = "hook-secret"
SHA1, SHA2 = "1" * 40, "2" * 40


def _delivery(repo, head=SHA1, old=None, scope="repo.content", repo_type="dataset"):
    return {
        "event": {"action": "update", "scope": scope},
        "repo": {"type": repo_type, "name": repo, "id": "abc", "private": True, "headSha": head},
        "updatedRefs": [{"ref": "refs/heads/main", "oldSha": old or "0" * 40, "newSha": head}],
        "webhook": {"id": "wh1", "version": 3},
    }


def _post_hook(env, body, secret=SECRET):
    return env.client.post("/v1/hub/webhooks", content=json.dumps(body), headers={"X-Webhook-Secret": secret})


def _jobs(env, key) -> list[Job]:
    """Jobs of the owner of `key` (the databases are shared by the whole test session)."""
    from hubtune.keys import lookup_key

    with env.session() as s:
        owner = lookup_key(s, key).owner
        return list(s.execute(select(Job).where(Job.owner == owner)).scalars())


def _trigger(env, key, repo, **job):
    body = {"repo_id": repo, "job": {"model": "tiny/bert", "training_file": f"hf://datasets/{repo}/train.jsonl", **job}}
    r = env.client.post("/v1/hub/triggers", headers=auth(key), json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def repo() -> str:
    """A dataset repo name of this test only: triggers match any owner's deliveries, and the databases
    are shared by the whole test session."""
    return f"acme/tickets-{secrets.token_hex(4)}"


def test_credentials_are_never_returned_and_are_encrypted_at_rest(env):
    key, other = env.key("alice"), env.key("bob")
    token = "hf_supersecrettoken123"
    r = env.client.post("/v1/hub/credentials", headers=auth(key), json={"name": "ci", "token": token})
    assert r.status_code == 200 and token not in r.text
    cred = r.json()
    listed = env.client.get("/v1/hub/credentials", headers=auth(key))
    assert [c["id"] for c in listed.json()["data"]] == [cred["id"]] and token not in listed.text
    assert env.client.get("/v1/hub/credentials", headers=auth(other)).json()["data"] == []
    with env.session() as s:
        stored = s.get(HubCredential, cred["id"]).token_encrypted
    assert token not in stored
    from hubtune.crypto import decrypt

    assert decrypt(env.settings, stored) == token
    assert (env.settings.data_dir.resolve() / "secret.key").stat().st_mode & 0o777 == 0o600
    assert_error(env.client.delete(f"/v1/hub/credentials/{cred['id']}", headers=auth(other)), 404)
    assert env.client.delete(f"/v1/hub/credentials/{cred['id']}", headers=auth(key)).json()["deleted"] is True
    assert env.client.get("/v1/hub/credentials", headers=auth(key)).json()["data"] == []


def test_webhook_creates_a_job_pinned_to_head_sha_once(env_factory, repo):
    env = env_factory(hub_webhook_secret=SECRET)
    key = env.key()
    trigger = _trigger(env, key, repo, validation_file=None)
    assert [t["id"] for t in env.client.get("/v1/hub/triggers", headers=auth(key)).json()["data"]] == [trigger["id"]]

    first = _post_hook(env, _delivery(repo, head=SHA1))
    assert first.status_code == 200, first.text
    (job_id,) = first.json()["jobs"]
    job = env.client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth(key)).json()
    assert job["training_file"] == f"hf://datasets/{repo}@{SHA1}/train.jsonl"
    assert job["status"] == "validating_files" and job["model"] == "tiny/bert"

    again = _post_hook(env, _delivery(repo, head=SHA1))
    assert again.status_code == 200 and again.json()["jobs"] == []
    assert "already handled" in again.json()["skipped"][trigger["id"]]
    assert len(_jobs(env, key)) == 1

    newer = _post_hook(env, _delivery(repo, head=SHA2, old=SHA1))
    assert len(newer.json()["jobs"]) == 1 and len(_jobs(env, key)) == 2


def test_wrong_or_missing_secret_is_401_and_creates_nothing(env_factory, repo):
    env = env_factory(hub_webhook_secret=SECRET)
    _trigger(env, key := env.key(), repo)
    assert_error(_post_hook(env, _delivery(repo), secret="wrong"), 401)
    assert_error(env.client.post("/v1/hub/webhooks", json=_delivery(repo)), 401)
    assert _jobs(env, key) == []
    with env.session() as s:
        from hubtune.models import Trigger

        mine = select(Trigger.id).where(Trigger.owner == _owner(env, key))
        assert s.execute(select(HubDelivery).where(HubDelivery.trigger_id.in_(mine))).first() is None


def test_unconfigured_secret_refuses_every_delivery(env, repo):
    _trigger(env, key := env.key(), repo)
    assert_error(_post_hook(env, _delivery(repo)), 401)
    assert _jobs(env, key) == []


def test_other_repos_and_events_start_nothing(env_factory, repo):
    env = env_factory(hub_webhook_secret=SECRET)
    _trigger(env, key := env.key(), repo)
    assert _post_hook(env, _delivery("acme/other")).json()["jobs"] == []
    assert _post_hook(env, _delivery(repo, scope="discussion")).json()["jobs"] == []
    assert _post_hook(env, _delivery(repo, repo_type="model")).json()["jobs"] == []
    assert_error(_post_hook(env, {"repo": {}}), 400, code="invalid_webhook")
    assert _jobs(env, key) == []


def test_trigger_must_watch_a_file_of_its_repo(env):
    key = env.key("alice")
    r = env.client.post("/v1/hub/triggers", headers=auth(key), json={
        "repo_id": "acme/tickets", "job": {"model": "tiny/bert", "training_file": "hf://datasets/acme/else/t.jsonl"}})
    assert_error(r, 400, param="job.training_file")
    r = env.client.post("/v1/hub/triggers", headers=auth(key), json={
        "repo_id": "acme/tickets", "job": {"model": "tiny/bert", "training_file": "hf://datasets/acme/tickets/../x"}})
    assert_error(r, 400, param="job.training_file")


def test_jobs_accept_hub_dataset_files(env):
    key = env.key("alice")
    ref = "hf://datasets/acme/tickets@v1/data/train.jsonl"
    job = create_job(env.client, key, ref)
    assert job["training_file"] == ref
    bad = env.client.post("/v1/fine_tuning/jobs", headers=auth(key),
                          json={"model": "tiny/bert", "training_file": "hf://datasets/acme/tickets@v1/../../etc"})
    assert_error(bad, 400, param="training_file", code="invalid_dataset")


def test_webhook_url_must_be_an_allowed_destination(env_factory):
    env = env_factory(webhook_allowed_private="127.0.0.1")
    key = env.key("alice")
    file_id = upload(env.client, key)["id"]
    for url in ("http://10.0.0.5/hook", "http://localhost:9/x", "http://[::1]/x", "http://169.254.169.254/latest"):
        r = env.client.post("/v1/fine_tuning/jobs", headers=auth(key),
                            json={"model": "tiny/bert", "training_file": file_id, "webhook_url": url})
        assert_error(r, 400, param="webhook_url", code="invalid_webhook_url")
    assert create_job(env.client, key, file_id, webhook_url="http://127.0.0.1:9/hook")["id"]
    strict = env_factory(webhook_allowed_hosts="hooks.example.com")
    key = strict.key("alice")
    file_id = upload(strict.client, key)["id"]
    r = strict.client.post("/v1/fine_tuning/jobs", headers=auth(key),
                           json={"model": "tiny/bert", "training_file": file_id, "webhook_url": "https://evil.example.org/"})
    assert_error(r, 400, param="webhook_url")
    assert create_job(strict.client, key, file_id, webhook_url="https://hooks.example.com/ft")["id"]


def test_publish_endpoint_only_retries_a_failed_job_with_an_artifact(env, tmp_path):
    key = env.key("alice")
    job = create_job(env.client, key, upload(env.client, key)["id"])
    assert_error(env.client.post(f"/v1/fine_tuning/jobs/{job['id']}/publish", headers=auth(key)), 400,
                 code="invalid_state")
    artifact = tmp_path / "artifact"
    with env.session() as s:
        row = s.get(Job, job["id"])
        row.status, row.error = "failed", {"code": "hub_auth_error", "message": "HTTP 403", "param": "hub"}
        s.commit()
    assert_error(env.client.post(f"/v1/fine_tuning/jobs/{job['id']}/publish", headers=auth(key)), 400,
                 code="no_artifact")
    artifact.mkdir()
    with env.session() as s:
        s.get(Job, job["id"]).artifact_path = str(artifact)
        s.commit()
    assert_error(env.client.post(f"/v1/fine_tuning/jobs/{job['id']}/publish", headers=auth(env.key("bob"))), 404)
    before = len(env.doorbells())
    r = env.client.post(f"/v1/fine_tuning/jobs/{job['id']}/publish", headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "running" and r.json()["stage"] == "publishing" and r.json()["error"] is None
    assert [d[0] for d in env.doorbells()[before:]] == ["hubtune.publish"]


def _owner(env, key) -> str:
    from hubtune.keys import lookup_key

    with env.session() as s:
        return lookup_key(s, key).owner


def test_path_pattern_starts_jobs_only_for_matching_changes(env_factory, tmp_path, repo):
    from plugin import LocalHub

    env = env_factory(hub_webhook_secret=SECRET, hub_backend="local", hub_dir=tmp_path / "hub")
    hub = LocalHub(tmp_path / "hub")
    hub.create_repo(repo, repo_type="dataset")
    c1 = hub.commit(repo, files={"data/train.jsonl": b"{}\n", "README.md": b"a"}, message="1",
                    branch="main", repo_type="dataset")
    c2 = hub.commit(repo, files={"README.md": b"b"}, message="docs only", branch="main", repo_type="dataset")
    c3 = hub.commit(repo, files={"data/train.jsonl": b"{}\n{}\n"}, message="data", branch="main",
                    repo_type="dataset")
    key = env.key()
    body = {"repo_id": repo, "path_pattern": "data/*.jsonl",
            "job": {"model": "tiny/bert", "training_file": f"hf://datasets/{repo}/data/train.jsonl"}}
    trigger = env.client.post("/v1/hub/triggers", headers=auth(key), json=body).json()
    docs = _post_hook(env, _delivery(repo, head=c2, old=c1))
    assert docs.json()["jobs"] == [] and "no changed file matches" in docs.json()["skipped"][trigger["id"]]
    data = _post_hook(env, _delivery(repo, head=c3, old=c2))
    (job_id,) = data.json()["jobs"]
    job = env.client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth(key)).json()
    assert job["training_file"] == f"hf://datasets/{repo}@{c3}/data/train.jsonl"
    assert env.client.delete(f"/v1/hub/triggers/{trigger['id']}", headers=auth(key)).json()["deleted"]
    assert _post_hook(env, _delivery(repo, head="3" * 40, old=c3)).json()["jobs"] == []
