"""Worker side of the hub plugin against the hub-compatible test server and a real (SQLite) database:
per-owner credentials, publish retries, completion notifications."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import openai
import pytest

from hubtune.migrate import upgrade
from hubtune.models import Job, Notification
from hubtune.queue import get_celery
from hubtune.settings import get_settings
from plugin.errors import HubAuthError, HubError, RepoNotFound
from tests.plugin.hubserver import HubServer
from tests.server.apitest_helpers import auth, create_job, make_env, upload

OWNER_TOKEN = "hf_owner_only_token"
WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A migrated SQLite database, process settings pointing at it and at an hf hub that only accepts
    OWNER_TOKEN, and an API app on the same database."""
    url = f"sqlite:///{tmp_path / 'hubtune.db'}"
    upgrade(url)
    with HubServer(tmp_path / "hub", token=OWNER_TOKEN) as server:
        values = {"DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": url, "HUB_BACKEND": "hf",
                  "HUB_ENDPOINT": server.url, "HUB_PUBLISH_ATTEMPTS": "4", "HUB_RETRY_BASE_SECONDS": "0.01",
                  "WEBHOOK_SECRET": WHSEC, "WEBHOOK_ALLOWED_PRIVATE": "127.0.0.1",
                  "WEBHOOK_RETRY_BASE_SECONDS": "0.01"}
        for name, value in values.items():
            monkeypatch.setenv(f"HUBTUNE_{name}", value)
        monkeypatch.delenv("HUBTUNE_HUB_TOKEN", raising=False)
        # The process-wide Celery app follows the process settings: rebuild both for this world.
        get_settings.cache_clear()
        get_celery.cache_clear()
        env = make_env(url, tmp_path / "data", **{k.lower(): v for k, v in values.items()
                                                    if k not in ("DATA_DIR", "DATABASE_URL")})
        yield env, server
    get_settings.cache_clear()
    get_celery.cache_clear()


def _owner(env, key) -> str:
    from hubtune.keys import lookup_key

    with env.session() as s:
        return lookup_key(s, key).owner


def test_owner_credential_reaches_the_hub_and_never_shows(world):
    from worker.hub import hub_for_owner, hub_from_settings

    env, server = world
    server.hub.create_repo("acme/base")
    server.hub.commit("acme/base", files={"README.md": b"base"}, message="init", branch="main")
    key = env.key()
    with pytest.raises((HubAuthError, RepoNotFound)):
        hub_for_owner(get_settings(), _owner(env, key)).resolve("acme/base")  # no credential, no server token
    r = env.client.post("/v1/hub/credentials", headers=auth(key), json={"token": OWNER_TOKEN})
    assert r.status_code == 200 and OWNER_TOKEN not in r.text
    hub = hub_for_owner(get_settings(), _owner(env, key))
    assert len(hub.resolve("acme/base")) == 40 and OWNER_TOKEN not in repr(hub)
    with pytest.raises(HubError) as err:
        hub_from_settings(get_settings()).resolve("acme/base")
    assert OWNER_TOKEN not in str(err.value)


def _artifact(tmp_path):
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    return folder


def _hub(server):
    from plugin import make_hub

    return make_hub(backend="hf", hub_dir=server.hub.root, endpoint=server.url, token=OWNER_TOKEN,
                    cache_dir=server.hub.root / "cache")


def test_publish_retries_5xx_and_a_moved_branch_then_fails_fast_on_403(world, tmp_path):
    from worker.publish import publish_with_retries

    env, server = world
    hub, folder, retries = _hub(server), _artifact(tmp_path), []
    server.fail_next(2, status=500)
    sha = publish_with_retries(hub, get_settings(), "acme/out", folder=folder, message="m", branch="main",
                               private=True, on_retry=retries.append)
    assert server.count("commit") == 3 and len(retries) == 2 and "hub_unavailable" in retries[0]
    assert server.hub.resolve("acme/out") == sha

    # Someone pushes between our read of the head and our commit: the hub refuses (parent_commit), we retry.
    real, moved = hub._api.repo_info, []

    def racing_repo_info(*args, **kwargs):
        info = real(*args, **kwargs)
        if not moved:
            moved.append(server.hub.commit("acme/out", files={"OTHER.md": b"theirs"}, message="x", branch="main"))
        return info

    hub._api.repo_info = racing_repo_info
    (folder / "adapter_model.safetensors").write_bytes(b"weights v2")
    retries.clear()
    sha = publish_with_retries(hub, get_settings(), "acme/out", folder=folder, message="m2", branch="main",
                               private=True, on_retry=retries.append)
    assert len(retries) == 1 and "hub_conflict" in retries[0]
    assert {"OTHER.md", "adapter_model.safetensors"} <= set(server.hub.tree("acme/out", revision=sha))

    server.forbid("acme/locked")
    retries.clear()
    with pytest.raises(HubAuthError, match="403"):
        publish_with_retries(hub, get_settings(), "acme/locked", folder=folder, message="m", branch="main",
                             private=True, on_retry=retries.append)
    assert retries == [] and (folder / "adapter_model.safetensors").is_file()


class Receiver:
    def __init__(self, statuses=()):
        self.received, statuses = [], list(statuses)
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                received.append((self.rfile.read(int(self.headers["content-length"])), dict(self.headers)))
                self.send_response(statuses.pop(0) if statuses else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_cancel_notifies_once_with_an_openai_verifiable_signature_after_retries(world):
    from worker.notify import run_notify

    env, _ = world
    receiver = Receiver(statuses=[503])
    key = env.key()
    job = create_job(env.client, key, upload(env.client, key)["id"], webhook_url=receiver.url)
    assert env.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(key)).json()["status"] == "cancelled"
    assert ("hubtune.notify", [job["id"]], "publish") in env.doorbells()
    run_notify(job["id"])
    run_notify(job["id"])  # a doorbell rung twice sends the event once
    assert len(receiver.received) == 2  # the 503, then the delivery
    (first, _), (body, headers) = receiver.received
    assert first == body
    event = openai.OpenAI(api_key="unused", webhook_secret=WHSEC).webhooks.unwrap(body.decode(), headers)
    assert event.type == "fine_tuning.job.cancelled" and event.data.id == job["id"]
    assert headers["webhook-id"] == json.loads(body)["id"]
    with env.session() as s:
        note = s.get(Notification, headers["webhook-id"])
        assert (note.status, note.attempts, note.job_id) == ("delivered", 2, job["id"])
    receiver.server.shutdown()


def test_jobs_without_webhook_url_ring_nothing_and_refused_destinations_are_recorded(world, monkeypatch):
    from worker.notify import run_notify

    env, _ = world
    key = env.key()
    quiet = create_job(env.client, key, upload(env.client, key)["id"])
    env.client.post(f"/v1/fine_tuning/jobs/{quiet['id']}/cancel", headers=auth(key))
    assert not [d for d in env.doorbells() if d[0] == "hubtune.notify"]

    job = create_job(env.client, key, upload(env.client, key)["id"], webhook_url="http://127.0.0.1:9/x")
    env.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(key))
    monkeypatch.setenv("HUBTUNE_WEBHOOK_ALLOWED_PRIVATE", "")  # the operator withdrew the exception meanwhile
    get_settings.cache_clear()
    run_notify(job["id"])
    with env.session() as s:
        from sqlalchemy import select

        (note,) = s.execute(select(Notification).where(Notification.job_id == job["id"])).scalars()
        assert note.status == "failed" and "private or loopback" in note.last_error
        assert s.get(Job, job["id"]).status == "cancelled"


EVALUATION = {
    "split": {"name": "validation", "examples": 16}, "primary_metric": "macro_f1",
    "base": {"macro_f1": 0.31, "accuracy": 0.5}, "tuned": {"macro_f1": 0.88, "accuracy": 0.9},
    "majority_baseline": {"macro_f1": 0.33, "accuracy": 0.5}, "beat_baseline": True, "goal": None,
}


def _publishing_job(env, server, tmp_path, *, tuning: str, evaluation) -> str:
    """A job whose training finished (artifact kept) and waits at stage publishing, as train leaves it."""
    from hubtune.ids import new_id
    from hubtune.models import JobEvent, now
    from hubtune.spec import JobRequest

    server.hub.create_repo("acme/base-model")
    base = server.hub.commit("acme/base-model", files={"README.md": b"---\nlicense: mit\n---\n# base\n",
                                                       "config.json": b"{}"}, message="init", branch="main")
    artifact = tmp_path / f"artifact-{tuning}"
    artifact.mkdir()
    (artifact / "config.json").write_text("{}")
    (artifact / "model.safetensors").write_bytes(b"w")
    request = JobRequest(model="acme/base-model", training_file="file-x", task="sequence_classification",
                         tuning={"type": tuning}, hub={"repo_id": f"acme/out-{tuning}", "branch": "release"})
    job_id, t = new_id("ftjob"), now()
    with env.session() as s:
        s.add(Job(id=job_id, owner="o", status="running", stage="publishing", model=request.model,
                  model_revision=base, training_file="file-x", seed=1, spec=request.model_dump(mode="json"),
                  hyperparameters={"n_epochs": 1}, data_report={"examples": 16, "tokens": 300},
                  result={"metrics": {"valid_loss": 0.4}, "steps": 4, "evaluation": evaluation},
                  artifact_path=str(artifact), attempts=1, max_attempts=3, lease_token=5, created_at=t, updated_at=t))
        s.flush()
        for step, loss in enumerate([1.0, 0.8, 0.5, 0.3], start=1):
            s.add(JobEvent(job_id=job_id, type="metrics", message=f"Step {step}", level="info", created_at=t,
                           data={"step": step, "train_loss": loss}))
        s.commit()
    return job_id


def test_full_fine_tune_card_carries_the_evaluation_and_the_license(world, tmp_path):
    from huggingface_hub import ModelCard

    from worker.publish import run_publish

    env, server = world
    env.client.post("/v1/hub/credentials", headers=auth(key := env.key()), json={"token": OWNER_TOKEN})
    job_id = _publishing_job(env, server, tmp_path, tuning="full", evaluation=EVALUATION)
    with env.session() as s:
        s.get(Job, job_id).owner = _owner(env, key)
        s.commit()
    run_publish(job_id)
    with env.session() as s:
        job = s.get(Job, job_id)
        assert job.status == "succeeded", job.error
        repo_id, commit = job.fine_tuned_model.split("@")
    assert repo_id == "acme/out-full" and server.hub.resolve(repo_id, revision="release") == commit
    files = server.hub.snapshot(repo_id, revision=commit)
    card = ModelCard.load(files / "README.md")
    meta = card.data.to_dict()
    assert "base_model_relation" not in meta and meta["library_name"] == "transformers"
    assert meta["license"] == "mit" and meta["base_model"] == "acme/base-model"
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    by_name = {m["name"]: m["value"] for m in metrics}
    assert by_name["macro_f1"] == 0.88 and by_name["macro_f1 (base model)"] == 0.31
    assert by_name["macro_f1 (majority-class baseline)"] == 0.33
    assert "AutoModelForSequenceClassification" in card.text and "beats the baseline" in card.text
    assert (files / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_card_without_an_evaluation_still_publishes(world, tmp_path):
    from worker.publish import run_publish

    env, server = world
    env.client.post("/v1/hub/credentials", headers=auth(key := env.key()), json={"token": OWNER_TOKEN})
    job_id = _publishing_job(env, server, tmp_path, tuning="adapter", evaluation=None)
    with env.session() as s:
        s.get(Job, job_id).owner = _owner(env, key)
        s.commit()
    run_publish(job_id)
    with env.session() as s:
        job = s.get(Job, job_id)
        assert job.status == "succeeded", job.error
        repo_id, commit = job.fine_tuned_model.split("@")
    text = (server.hub.snapshot(repo_id, revision=commit) / "README.md").read_text()
    assert "base_model_relation: adapter" in text and "load_for_inference" in text


@pytest.mark.parametrize("files, code", [
    ({"config.json": b"{}", "pytorch_model.bin": b"pickle"}, "unsafe_weights"),
    ({"config.json": b'{"auto_map": {"AutoModel": "modeling_x.XModel"}}', "model.safetensors": b"w",
      "modeling_x.py": b"import os"}, "remote_code_not_allowed"),
])
def test_prepare_refuses_pickled_weights_and_custom_code(world, files, code):
    from worker.prepare import run_prepare

    env, server = world
    key = env.key()
    env.client.post("/v1/hub/credentials", headers=auth(key), json={"token": OWNER_TOKEN})
    server.hub.create_repo("acme/risky")
    server.hub.commit("acme/risky", files=files, message="m", branch="main")
    job = create_job(env.client, key, upload(env.client, key)["id"], model="acme/risky")
    run_prepare(job["id"])
    with env.session() as s:
        row = s.get(Job, job["id"])
        assert row.status == "failed" and row.error["code"] == code and row.error["param"] == "model", row.error
