"""Hub repos belong to their owners, and nothing private leaks (issue 14, items 1 and 2).

Through the server's own hub access (the local hub folder; the hf backend with one server-wide token) a key
writes only to its owner's namespace and the namespaces an admin granted it; an admin key anywhere; with the
owner's own hub credential the hub decides. Checked at create (403 naming hub.repo_id), when a trigger is
created and when it fires, for a publish retry, and at publish from the key's current grants. Another
owner's private repo answers estimate and prepare exactly as a missing one; errors name no server folder;
/v1/queues shows a non-admin its own counts only.

Every test runs on both backends: the local hub, and the unmodified huggingface_hub client against the
hub-compatible test server with a server-wide token. API calls go through the app, stages through the
worker's own functions (run_prepare, run_publish), on a migrated SQLite database.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from hubtune.db import engine_for
from hubtune.keys import create_key, lookup_key
from hubtune.migrate import upgrade
from hubtune.models import Job, now
from hubtune.queue import get_celery
from hubtune.settings import get_settings
from plugin import LocalHub
from tests.plugin.conftest import _isolated_hf_client  # noqa: F401 - autouse: no saved token, no Xet
from testkit.hubserver import HubServer
from tests.server.apitest_helpers import Env, assert_error, auth, make_env, upload
from tests.server.test_estimate import LLAMA_7B
from testkit.stack import hubtune_cmd

SERVER_TOKEN = "hf_server_wide_" + secrets.token_hex(8)
HOOK_SECRET = "hook-secret"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TRAIN = b"".join(json.dumps({"text": f"t {i}", "label": "a" if i % 2 else "b"}).encode() + b"\n" for i in range(8))


@dataclass
class World:
    env: Env
    hub: LocalHub  # the hub's own storage (the local hub, or the test server's): seeds repos, reads logs
    backend: str
    server: HubServer | None
    data: Path
    keys: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)

    @property
    def client(self):
        return self.env.client

    def logs(self) -> dict[str, list[str]]:
        """Every commit sha of every model repo, by repo id: what a refused publish must leave as is."""
        root = self.hub.root / "models"
        repos = [f"{ns.name}/{r.name}" for ns in root.iterdir() for r in ns.iterdir()] if root.is_dir() else []
        return {repo: [c["sha"] for c in self.hub.log(repo)] for repo in sorted(repos)}


def _seed(hub: LocalHub, repo_id: str, files: dict[str, bytes], *, private: bool, repo_type: str = "model") -> None:
    hub.create_repo(repo_id, repo_type=repo_type, private=private)
    hub.commit(repo_id, files=files, message=f"seed {repo_id}", branch="main", repo_type=repo_type)


@pytest.fixture(params=["local", "hf"])
def world(request, tmp_path, monkeypatch):
    """Keys of three owners: admin (an admin key), bob, and carol (granted the namespace acme), on a
    hub holding the admin's private repos and an acme repo with the admin's commit."""
    url = f"sqlite:///{tmp_path / 'hubtune.db'}"
    upgrade(url)
    data = tmp_path / "data"
    with contextlib.ExitStack() as stack:
        values = {"HUB_BACKEND": request.param, "HUB_PUBLISH_ATTEMPTS": "1", "HUB_WEBHOOK_SECRET": HOOK_SECRET}
        server = None
        if request.param == "hf":
            server = stack.enter_context(HubServer(tmp_path / "hub-server", token=SERVER_TOKEN))
            values |= {"HUB_ENDPOINT": server.url, "HUB_TOKEN": SERVER_TOKEN}
        for name, value in {**values, "DATA_DIR": str(data), "DATABASE_URL": url}.items():
            monkeypatch.setenv(f"HUBTUNE_{name}", value)
        get_settings.cache_clear()  # the worker functions read the process settings
        get_celery.cache_clear()
        env = make_env(url, data, **{k.lower(): v for k, v in values.items()})
        hub = server.hub if server else LocalHub(env.settings.resolved_hub_dir)
        w = World(env=env, hub=hub, backend=request.param, server=server, data=data)
        _seed(hub, "admin/topics-lora", {"adapter_model.safetensors": b"the admin's"}, private=True)
        _seed(hub, "acme/shared", {"adapter_model.safetensors": b"acme's"}, private=True)
        _seed(hub, "admin/private-base", {"config.json": json.dumps(LLAMA_7B).encode()}, private=True)
        _seed(hub, "admin/public-base", {"config.json": json.dumps(LLAMA_7B).encode()}, private=False)
        _seed(hub, "carol/own-base", {"config.json": json.dumps(LLAMA_7B).encode()}, private=True)
        _seed(hub, "admin/private-data", {"train.jsonl": TRAIN}, private=True, repo_type="dataset")
        with env.session() as s:
            for who, admin, granted in (("admin", True, []), ("bob", False, []), ("carol", False, ["acme"])):
                w.keys[who] = create_key(s, owner=who, name=who, admin=admin, namespaces=granted)
            s.commit()
            w.key_ids = {who: lookup_key(s, key).id for who, key in w.keys.items()}
        yield w
    get_settings.cache_clear()
    get_celery.cache_clear()


def _create(w: World, who: str, **body):
    file_id = upload(w.client, w.keys[who], TRAIN)["id"]
    return w.client.post("/v1/fine_tuning/jobs", headers=auth(w.keys[who]),
                         json={"model": MODEL, "training_file": file_id, **body})


def _job(w: World, who: str, **body) -> str:
    r = _create(w, who, **body)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _at_publishing(w: World, job_id: str) -> Path:
    """The job as training leaves it: running at stage publishing with its artifact kept."""
    artifact = w.data / "artifacts" / job_id
    artifact.mkdir(parents=True)
    (artifact / "adapter_config.json").write_text("{}")
    (artifact / "adapter_model.safetensors").write_bytes(b"weights of " + job_id.encode())
    with w.env.session() as s:
        job = s.get(Job, job_id)
        job.status, job.stage, job.artifact_path, job.result = "running", "publishing", str(artifact), {}
        job.hyperparameters, job.data_report = {"n_epochs": 1}, {"examples": 8}
        job.model_revision = "0" * 40
        job.spec = {**job.spec, "task": "sequence_classification"}  # as prepare records it
        s.commit()
    return artifact


def _publish(w: World, job_id: str) -> Job:
    from worker.publish import run_publish

    run_publish(job_id, get_settings())
    with w.env.session() as s:
        return s.get(Job, job_id)


def _no_server_path(w: World, text: str) -> None:
    for path in ("/tmp", str(w.data), str(w.data.resolve()), str(w.hub.root)):
        assert path not in text, (path, text)


# --- item 1: writes -----------------------------------------------------------------------------------


def test_create_refuses_a_repo_outside_the_keys_namespaces_with_a_403_naming_hub_repo_id(world):
    w = world
    before = w.logs()
    messages = {}
    for repo in ("admin/topics-lora", "admin/no-such-repo", "carol/x", "acme/x", "topics"):
        error = assert_error(_create(w, "bob", hub={"repo_id": repo}), 403, param="hub.repo_id", code="forbidden")
        assert repo in error["message"] and "'bob'" in error["message"]
        _no_server_path(w, error["message"])
        messages[repo] = error["message"].replace(repo, "REPO")
    # The answer says nothing about whether the repo exists.
    assert messages["admin/topics-lora"] == messages["admin/no-such-repo"]
    assert_error(_create(w, "carol", hub={"repo_id": "admin/topics-lora"}), 403, param="hub.repo_id")

    _job(w, "bob", hub={"repo_id": "bob/mine"})  # its owner's namespace
    _job(w, "bob")  # no repo named: the server's default repo under the owner's namespace
    _job(w, "carol", hub={"repo_id": "acme/new"})  # a granted namespace
    _job(w, "admin", hub={"repo_id": "carol/anything"})  # admin: anywhere
    _job(w, "admin", hub={"repo_id": "topics"})
    with w.env.session() as s:
        jobs = s.execute(select(Job.owner, Job.key_id)).all()
    assert sorted(jobs) == sorted([("bob", w.key_ids["bob"])] * 2 + [("carol", w.key_ids["carol"])]
                                  + [("admin", w.key_ids["admin"])] * 2)
    assert w.logs() == before


def test_publish_rechecks_the_current_grant_and_the_other_owners_repo_keeps_its_commits(world):
    w = world
    job_id = _job(w, "carol", hub={"repo_id": "acme/shared"})  # granted at create
    r = w.client.patch(f"/v1/keys/{w.key_ids['carol']}", headers=auth(w.keys["admin"]), json={"namespaces": []})
    assert r.status_code == 200 and r.json()["namespaces"] == [], r.text
    artifact = _at_publishing(w, job_id)
    before = w.logs()

    job = _publish(w, job_id)
    assert job.status == "failed" and job.error["code"] == "forbidden" and job.error["param"] == "hub.repo_id"
    assert "acme/shared" in job.error["message"] and "artifact is kept" in job.error["message"]
    _no_server_path(w, job.error["message"])
    assert sorted(p.name for p in artifact.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert w.logs() == before

    # A publish retry by the same key is refused at once; an admin's retry publishes with the admin's rights.
    retry = w.client.post(f"/v1/fine_tuning/jobs/{job_id}/publish", headers=auth(w.keys["carol"]))
    assert_error(retry, 403, param="hub.repo_id", code="forbidden")
    assert w.logs() == before
    retry = w.client.post(f"/v1/fine_tuning/jobs/{job_id}/publish", headers=auth(w.keys["admin"]))
    assert retry.status_code == 200 and retry.json()["status"] == "running", retry.text
    job = _publish(w, job_id)
    assert job.status == "succeeded", job.error
    assert [c["sha"] for c in w.hub.log("acme/shared")][:-1] == before["acme/shared"]
    assert job_id in w.hub.log("acme/shared")[-1]["message"]


def test_a_revoked_keys_job_does_not_publish(world):
    w = world
    job_id = _job(w, "bob", hub={"repo_id": "bob/mine"})
    _at_publishing(w, job_id)
    r = w.client.delete(f"/v1/keys/{w.key_ids['bob']}", headers=auth(w.keys["admin"]))
    assert r.status_code == 200 and r.json()["revoked_at"] is not None, r.text
    before = w.logs()
    job = _publish(w, job_id)
    assert job.status == "failed" and job.error["code"] == "forbidden" and "revoked" in job.error["message"]
    assert w.logs() == before and "bob/mine" not in before


def test_own_and_granted_namespaces_publish_and_an_admin_publishes_anywhere(world):
    w = world
    before = w.logs()
    published = {}
    for who, body in (("carol", {"hub": {"repo_id": "acme/granted"}}),
                      ("admin", {"hub": {"repo_id": "carol/by-admin"}}), ("bob", {"suffix": "default"})):
        job_id = _job(w, who, **body)
        _at_publishing(w, job_id)
        job = _publish(w, job_id)
        assert job.status == "succeeded", (who, job.error)
        published[job.hub_repo] = job.hub_commit
    assert set(published) == {"acme/granted", "carol/by-admin", "bob/all-MiniLM-L6-v2-default"}
    after = w.logs()
    assert {repo: after[repo] for repo in before} == before  # nobody else's repo moved
    assert all(after[repo][-1] == sha for repo, sha in published.items())


@pytest.mark.parametrize("world", ["hf"], indirect=True)  # the local hub has no tokens: only the server's access
def test_with_the_owners_own_credential_the_hub_decides(world):
    w = world
    # bob's own token (the test hub knows only one token; what it forbids stands for the hub's rights).
    r = w.client.post("/v1/hub/credentials", headers=auth(w.keys["bob"]), json={"token": SERVER_TOKEN})
    assert r.status_code == 200, r.text
    allowed = _job(w, "bob", hub={"repo_id": "carol/hub-allows"})  # no namespace check with bob's own token
    refused = _job(w, "bob", hub={"repo_id": "admin/topics-lora"})
    w.server.forbid("admin/topics-lora")
    before = w.logs()
    for job_id in (allowed, refused):
        _at_publishing(w, job_id)
    assert _publish(w, allowed).status == "succeeded"
    job = _publish(w, refused)
    assert job.status == "failed" and job.error["code"] == "hub_auth_error", job.error
    assert w.logs()["admin/topics-lora"] == before["admin/topics-lora"]


def _delivery(repo: str, head: str) -> bytes:
    return json.dumps({
        "event": {"action": "update", "scope": "repo.content"},
        "repo": {"type": "dataset", "name": repo, "id": "x", "private": False, "headSha": head},
        "updatedRefs": [{"ref": "refs/heads/main", "oldSha": "0" * 40, "newSha": head}],
        "webhook": {"id": "wh", "version": 3},
    }).encode()


def _fire(w: World, repo: str) -> dict:
    r = w.client.post("/v1/hub/webhooks", content=_delivery(repo, secrets.token_hex(20)),
                      headers={"X-Webhook-Secret": HOOK_SECRET})
    assert r.status_code == 200, r.text
    return r.json()


def test_triggers_are_checked_when_created_and_each_time_they_fire(world):
    w = world
    repo = "carol/tickets"
    job = {"model": MODEL, "training_file": f"hf://datasets/{repo}/train.jsonl"}

    def trigger(who: str, hub_repo: str):
        return w.client.post("/v1/hub/triggers", headers=auth(w.keys[who]),
                             json={"repo_id": repo, "job": {**job, "hub": {"repo_id": hub_repo}}})

    assert_error(trigger("bob", "admin/topics-lora"), 403, param="job.hub.repo_id", code="forbidden")
    created = trigger("carol", "acme/from-trigger")
    assert created.status_code == 200, created.text
    trigger_id = created.json()["id"]
    (first,) = _fire(w, repo)["jobs"]
    with w.env.session() as s:
        assert s.get(Job, first).key_id == w.key_ids["carol"]

    w.client.patch(f"/v1/keys/{w.key_ids['carol']}", headers=auth(w.keys["admin"]), json={"namespaces": []})
    answer = _fire(w, repo)
    assert answer["jobs"] == [] and "may not publish to 'acme/from-trigger'" in answer["skipped"][trigger_id]
    w.client.patch(f"/v1/keys/{w.key_ids['carol']}", headers=auth(w.keys["admin"]), json={"namespaces": ["acme"]})
    assert len(_fire(w, repo)["jobs"]) == 1
    w.client.delete(f"/v1/keys/{w.key_ids['carol']}", headers=auth(w.keys["admin"]))
    answer = _fire(w, repo)
    assert answer["jobs"] == [] and "revoked" in answer["skipped"][trigger_id]


# --- item 2: no private facts leak ----------------------------------------------------------------------


def _same_answer(hidden: str, missing: str, texts: tuple[str, str]) -> None:
    a, b = texts
    assert a.replace(hidden, "REPO") == b.replace(missing, "REPO"), (a, b)


def test_estimate_answers_another_owners_private_repo_as_a_missing_one(world):
    w = world

    def estimate(who: str, model: str):
        return w.client.post("/v1/fine_tuning/jobs/estimate", headers=auth(w.keys[who]), json={"model": model})

    for suffix in ("", "@main", "@v9"):
        hidden, missing = estimate("bob", f"admin/private-base{suffix}"), estimate("bob", f"admin/no-such-base{suffix}")
        assert_error(hidden, 400, param="model", code="model_not_found")
        assert hidden.status_code == missing.status_code
        _same_answer("admin/private-base", "admin/no-such-base", (hidden.text, missing.text))
        _no_server_path(w, hidden.text + missing.text)
    assert_error(estimate("bob", "carol/own-base"), 400, code="model_not_found")
    # Public repos stay readable; private ones to the keys that own their namespace.
    assert estimate("bob", "admin/public-base").status_code == 200
    assert estimate("carol", "carol/own-base").status_code == 200
    assert estimate("admin", "admin/private-base").status_code == 200


def test_prepare_answers_another_owners_private_model_or_dataset_as_a_missing_one(world):
    from worker.prepare import run_prepare

    w = world

    def error(job_id: str) -> dict:
        run_prepare(job_id, get_settings())
        with w.env.session() as s:
            job = s.get(Job, job_id)
            assert job.status == "failed", job.error
            return job.error

    hidden = error(_job(w, "bob", model="admin/private-base"))
    missing = error(_job(w, "bob", model="admin/no-such-base"))
    assert hidden["code"] == missing["code"] == "model_not_found" and hidden["param"] == "model"
    _same_answer("admin/private-base", "admin/no-such-base", (json.dumps(hidden), json.dumps(missing)))
    _no_server_path(w, json.dumps([hidden, missing]))

    def dataset_job(repo: str) -> str:
        r = w.client.post("/v1/fine_tuning/jobs", headers=auth(w.keys["bob"]),
                          json={"model": MODEL, "training_file": f"hf://datasets/{repo}/train.jsonl"})
        assert r.status_code == 200, r.text
        return r.json()["id"]

    hidden, missing = error(dataset_job("admin/private-data")), error(dataset_job("admin/no-such-data"))
    assert hidden["code"] == missing["code"] == "dataset_not_found"
    _same_answer("admin/private-data", "admin/no-such-data", (json.dumps(hidden), json.dumps(missing)))
    _no_server_path(w, json.dumps([hidden, missing]))


def test_job_errors_name_no_server_folder(world):
    """A stage failing on a missing file: the library's message quotes the path, the job's error does not."""
    w = world
    job_id = _job(w, "bob", hub={"repo_id": "bob/lost"})
    artifact = _at_publishing(w, job_id)
    for path in artifact.iterdir():
        path.unlink()
    artifact.rmdir()
    job = _publish(w, job_id)
    assert job.status == "failed" and "No such file" in job.error["message"], job.error
    _no_server_path(w, job.error["message"])
    with pytest.raises(Exception) as err:
        w.hub.resolve("nobody/nothing")
    _no_server_path(w, str(err.value))


def test_queues_show_a_non_admin_only_their_own_counts(world):
    w = world
    for owner, n in (("admin", 3), ("carol", 2), ("bob", 1)):
        for _ in range(n):
            with w.env.session() as s:
                s.add(Job(id=f"ftjob-{secrets.token_hex(6)}", owner=owner, status="queued", queue="gpu-q", model="m",
                          training_file="f", seed=1, spec={}, attempts=0, max_attempts=3, lease_token=0,
                          created_at=now(), updated_at=now()))
                s.add(Job(id=f"ftjob-{secrets.token_hex(6)}", owner=owner, status="succeeded", queue="gpu-q",
                          model="m", training_file="f", seed=1, spec={}, attempts=1, max_attempts=3, lease_token=0,
                          created_at=now(), updated_at=now(), finished_at=now()))
                s.commit()

    def view(who: str) -> tuple[int, int]:
        body = w.client.get("/v1/queues", headers=auth(w.keys[who])).json()
        waiting = next(q["waiting"] for q in body["data"] if q["name"] == "gpu-q")
        return waiting, sum(h["succeeded"] for h in body["finished_per_hour"])

    assert view("admin") == (6, 6)
    assert view("bob") == (1, 1)
    assert view("carol") == (2, 2)


# --- the admin API and CLI for keys --------------------------------------------------------------------


def test_keys_api_is_for_admins_and_shows_the_secret_once(world):
    w = world
    admin, bob = auth(w.keys["admin"]), auth(w.keys["bob"])
    r = w.client.post("/v1/keys", headers=admin, json={"owner": "dana", "namespaces": ["ml-team", " acme ", "ml-team"]})
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["key"].startswith("ht-") and made["namespaces"] == ["ml-team", "acme"] and made["admin"] is False
    assert w.client.get("/v1/files", headers=auth(made["key"])).status_code == 200
    listed = w.client.get("/v1/keys", headers=admin)
    assert made["key"] not in listed.text and {k["owner"] for k in listed.json()["data"]} >= {"dana", "bob"}
    assert all(k["key"] is None for k in listed.json()["data"])

    for method, path in (("POST", "/v1/keys"), ("GET", "/v1/keys"), ("PATCH", f"/v1/keys/{made['id']}"),
                         ("DELETE", f"/v1/keys/{made['id']}")):
        body = {"owner": "x"} if method == "POST" else {"namespaces": ["bob-owns-all"]}
        assert_error(w.client.request(method, path, headers=bob, json=body), 403, code="forbidden")
    assert_error(w.client.patch(f"/v1/keys/{made['id']}", headers=admin, json={"namespaces": ["a/b"]}), 400,
                 param="namespaces", code="invalid_namespace")
    assert_error(w.client.patch("/v1/keys/key-nope", headers=admin, json={"namespaces": []}), 404)
    r = w.client.delete(f"/v1/keys/{made['id']}", headers=admin)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert w.client.get("/v1/files", headers=auth(made["key"])).status_code == 401


def test_cli_keys_create_grants_namespaces(tmp_path):
    url = f"sqlite:///{tmp_path / 'hubtune.db'}"
    upgrade(url)
    env = {**os.environ, "HUBTUNE_DATABASE_URL": url, "HUBTUNE_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run(hubtune_cmd("keys", "create", "--name", "ops", "--namespaces", "acme,ml-team"), env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with Session(engine_for(url)) as s:
        row = lookup_key(s, out.stdout.strip())
        assert (row.owner, row.namespaces, row.is_admin) == ("ops", ["acme", "ml-team"], False)
    bad = subprocess.run(hubtune_cmd("keys", "create", "--name", "ops", "--namespaces", "acme,a b"), env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "--namespaces" in bad.stderr and "'a b'" in bad.stderr
