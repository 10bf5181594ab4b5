"""A world for the worker's tasks run in-process: a migrated SQLite database, process settings pointing at
it and at the hub-compatible test server (tests/plugin/hubserver.py), and an API app on the same database.
Shared by tests/worker/test_hub.py, test_prepare.py, test_publish.py and test_notify.py."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from hubtune.migrate import upgrade
from hubtune.models import Job
from hubtune.queue import get_celery
from hubtune.settings import get_settings
from testkit.hubserver import HubServer
from tests.server.apitest_helpers import make_env

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


def owner_of(env, key) -> str:
    from hubtune.keys import lookup_key

    with env.session() as s:
        return lookup_key(s, key).owner


def artifact(tmp_path):
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    return folder


def owner_token_hub(server):
    from plugin import make_hub

    return make_hub(backend="hf", hub_dir=server.hub.root, endpoint=server.url, token=OWNER_TOKEN,
                    cache_dir=server.hub.root / "cache")


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


EVALUATION = {
    "split": {"name": "validation", "examples": 16}, "primary_metric": "macro_f1",
    "base": {"macro_f1": 0.31, "accuracy": 0.5}, "tuned": {"macro_f1": 0.88, "accuracy": 0.9},
    "majority_baseline": {"macro_f1": 0.33, "accuracy": 0.5}, "beat_baseline": True, "goal": None,
}


def publishing_job(env, server, tmp_path, *, tuning: str, evaluation) -> str:
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


