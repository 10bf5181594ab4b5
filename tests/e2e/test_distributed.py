"""End to end on the distributed path: PostgreSQL + Redis + a real Celery worker process + the API server
process, pushing with the unmodified huggingface_hub client to a hub-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.e2e.checks import assert_loss_fell, assert_same_outputs, outputs_from_hub_by_repo_id
from testkit.tiny_models import (
    make_tiny_bert, make_tiny_llama, write_chat_jsonl, write_classification_jsonl,
)
from testkit.hubserver import HubServer
from testkit.services import postgres_database, redis_url
from testkit.stack import Stack, all_events, upload, wait_for

pytestmark = pytest.mark.e2e
HUB_TOKEN = "hub-secret-token"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    with postgres_database("hubtune_e2e") as db_url, HubServer(root / "hub-server", token=HUB_TOKEN) as hub:
        stack = Stack(root, {
            "HUBTUNE_DATABASE_URL": db_url, "HUBTUNE_BROKER_URL": redis_url(13),
            "HUBTUNE_HUB_BACKEND": "hf", "HUBTUNE_HUB_ENDPOINT": hub.url, "HUBTUNE_HUB_TOKEN": HUB_TOKEN,
            "HF_HUB_DISABLE_XET": "1", "HUBTUNE_HEARTBEAT_SECONDS": "1",
        })
        stack.run("hub", "import", str(make_tiny_bert(root / "tiny-bert")), "tiny/bert")
        stack.run("hub", "import", str(make_tiny_llama(root / "tiny-llama")), "tiny/llama")
        stack.start()
        keys = {"alice": stack.run("keys", "create", "--name", "alice").strip(),
                "bob": stack.run("keys", "create", "--name", "bob").strip()}
        try:
            yield {"stack": stack, "hub": hub, "keys": keys, "root": root, "db_url": db_url}
        finally:
            stack.stop()


def _client(env, who="alice") -> httpx.Client:
    return env["stack"].client(env["keys"][who])


def _create(client, **body) -> dict:
    response = client.post("/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _check_pushed_adapter(env, job, *, base: str, task: str) -> None:
    repo_id, commit = job["fine_tuned_model"].split("@")
    hub = env["hub"]
    files = set(hub.hub.snapshot(repo_id, revision=commit).rglob("*"))
    names = {p.name for p in files}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "metrics.json"} <= names
    reference = job["result"]["reference"]
    loaded = outputs_from_hub_by_repo_id(
        endpoint=hub.url, token=HUB_TOKEN, base=base, base_rev=job["model_revision"], repo_id=repo_id,
        revision=commit, task=task, inputs=reference["inputs"], cache=env["root"] / f"cache-{job['id']}",
    )
    assert_same_outputs(reference, loaded)


def test_classification_job_runs_end_to_end(env):
    client, root = _client(env), env["root"]
    train = upload(client, write_classification_jsonl(root / "cls-train.jsonl", n=64, seed=1))
    valid = upload(client, write_classification_jsonl(root / "cls-valid.jsonl", n=16, seed=2))
    job = _create(client, model="tiny/bert", training_file=train, validation_file=valid, seed=7,
                  task="sequence_classification", tuning={"type": "lora", "r": 8, "alpha": 16},
                  training={"learning_rate": 0.01, "max_seq_length": 32},
                  hyperparameters={"n_epochs": 4, "batch_size": 8}, hub={"repo_id": "alice/tiny-cls"})
    assert job["status"] == "validating_files" and job["tuning"]["r"] == 8
    job = wait_for(client, job["id"], stack=env["stack"])
    assert job["status"] == "succeeded", (job["error"], env["stack"].logs())
    assert job["fine_tuned_model"].startswith("alice/tiny-cls@")
    assert job["trained_tokens"] > 0 and job["finished_at"] >= job["created_at"]
    assert len(job["model_revision"]) == 40
    events = all_events(client, job["id"])
    assert_loss_fell(events)
    metrics = [e["data"] for e in events if e["type"] == "metrics"]
    assert all({"step", "total_steps", "train_loss", "learning_rate", "epoch"} <= set(m) for m in metrics
               if "train_loss" in m)
    assert any("valid_loss" in m for m in metrics)
    checkpoints = client.get(f"/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    assert checkpoints and all(c["step_number"] > 0 for c in checkpoints)
    _check_pushed_adapter(env, job, base="tiny/bert", task="sequence_classification")


def test_causal_lm_chat_job_runs_end_to_end(env):
    client, root = _client(env), env["root"]
    train = upload(client, write_chat_jsonl(root / "chat-train.jsonl", n=48, seed=3))
    job = _create(client, model="tiny/llama", training_file=train, seed=11, task="causal_lm",
                  tuning={"type": "lora", "r": 8, "alpha": 16}, training={"learning_rate": 0.01, "max_seq_length": 64},
                  hyperparameters={"n_epochs": 4, "batch_size": 8})
    job = wait_for(client, job["id"], stack=env["stack"])
    assert job["status"] == "succeeded", (job["error"], env["stack"].logs())
    # No hub.repo_id: a repo named after the job under the owner's namespace.
    assert job["fine_tuned_model"].startswith(f"alice/llama-{job['id']}@")
    assert_loss_fell(all_events(client, job["id"]))
    _check_pushed_adapter(env, job, base="tiny/llama", task="causal_lm")


def _running_job(env, name: str, *, max_steps: int, seed: int, past_step: int) -> tuple[httpx.Client, dict]:
    """A job that trains for a while, returned once its metrics have passed `past_step`."""
    client, root = _client(env), env["root"]
    train = upload(client, write_classification_jsonl(root / f"{name}.jsonl", n=64, seed=seed))
    job = _create(client, model="tiny/bert", training_file=train, task="sequence_classification",
                  training={"max_steps": max_steps, "max_seq_length": 32}, hyperparameters={"batch_size": 4})
    deadline = time.monotonic() + 300
    while not (_steps(client, job["id"]) and max(_steps(client, job["id"])) >= past_step):
        assert time.monotonic() < deadline, env["stack"].logs()
        time.sleep(0.2)
    return client, job


def _steps(client, job_id) -> list[int]:
    return [e["data"]["step"] for e in all_events(client, job_id) if e["type"] == "metrics" and "train_loss" in e["data"]]


def _worker_job(env) -> str | None:
    """The job the (one) worker says it is on: worker/registry.set_current_job, set when run_train
    claims a job and cleared when it returns."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from hubtune.db import engine_for
    from hubtune.models import WorkerRecord

    with Session(engine_for(env["db_url"])) as session:
        return session.scalars(select(WorkerRecord.current_job_id)).first()


def _wait_until_the_worker_lets_go(env, job_id: str, timeout: float = 120) -> None:
    """Returns once the worker has left `job_id`: its training stopped and it will write no more steps."""
    deadline = time.monotonic() + timeout
    while _worker_job(env) == job_id:
        assert time.monotonic() < deadline, f"the worker still holds {job_id}\n{env['stack'].logs()}"
        time.sleep(0.2)


def test_cancel_stops_a_running_job_within_a_step(env):
    client, job = _running_job(env, "long", max_steps=5000, seed=4, past_step=3)
    assert _worker_job(env) == job["id"]  # else the wait below would not wait for anything
    response = client.post(f"/fine_tuning/jobs/{job['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    at_cancel = max(_steps(client, job["id"]))
    _wait_until_the_worker_lets_go(env, job["id"])
    after = _steps(client, job["id"])
    assert max(after) <= at_cancel + 1, f"kept training after cancel: {at_cancel} -> {max(after)}"
    job = client.get(f"/fine_tuning/jobs/{job['id']}").json()
    assert job["status"] == "cancelled" and job["fine_tuned_model"] is None


BAD_ROWS = {
    "malformed": ('{"text": "good", "label": "a"}\n{"text": "b", "label": "b"}\n{"text": oops}\n', "line 3"),
    "missing_column": ('{"text": "x", "label": "a"}\n{"text": "y"}\n', "line 2"),
    "wrong_label_type": ('{"text": "x", "label": "a"}\n{"text": "y", "label": [1]}\n', "line 2"),
}


def test_bad_input_fails_cleanly_and_other_jobs_carry_on(env):
    client, root = _client(env), env["root"]
    failed = {}
    for name, (text, where) in BAD_ROWS.items():
        path = root / f"{name}.jsonl"
        path.write_text(text)
        failed[name] = (_create(client, model="tiny/bert", training_file=upload(client, path),
                                task="sequence_classification")["id"], where)
    good_file = upload(client, write_classification_jsonl(root / "ok.jsonl", n=32, seed=5))
    good = _create(client, model="tiny/bert", training_file=good_file, task="sequence_classification",
                   hyperparameters={"n_epochs": 1, "batch_size": 8}, training={"max_seq_length": 32})["id"]

    for name, (job_id, where) in failed.items():
        job = wait_for(client, job_id)
        assert job["status"] == "failed", name
        assert job["error"]["param"] == "training_file" and where in job["error"]["message"], job["error"]
        assert job["error"]["code"], job["error"]
    assert wait_for(client, good, stack=env["stack"])["status"] == "succeeded"

    # Mistakes the server can see at once are a 4xx naming the field, never a 500.
    empty = client.post("/files", data={"purpose": "fine-tune"}, files={"file": ("e.jsonl", b"")})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "file"
    for body, param in [
        ({"model": "tiny/bert", "training_file": "file-doesnotexist"}, "training_file"),
        ({"model": "nobody/no-such-model", "training_file": good_file}, "model"),  # the hub said so at once
        ({"model": "tiny/bert", "training_file": good_file, "tuning": {"type": "nope"}}, "tuning.type"),
        ({"model": "tiny/bert", "training_file": good_file, "hyperparameters": {"n_epochs": 0}},
         "hyperparameters.n_epochs"),
        ({"model": "tiny/bert", "training_file": good_file, "tuning": {"rank": 4}}, "tuning.rank"),
    ]:
        response = client.post("/fine_tuning/jobs", json=body)
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["error"]["param"] == param, response.text


def test_other_owners_see_nothing(env):
    alice, bob = _client(env), _client(env, "bob")
    jobs = alice.get("/fine_tuning/jobs", params={"limit": 1}).json()["data"]
    assert jobs
    assert bob.get(f"/fine_tuning/jobs/{jobs[0]['id']}").status_code == 404
    assert bob.get(f"/fine_tuning/jobs/{jobs[0]['id']}/events").status_code == 404
    assert bob.get("/fine_tuning/jobs").json()["data"] == []
    assert json.loads(bob.get(f"/files/{jobs[0]['training_file']}").text)["error"]["code"]


def test_pause_then_resume_continues_from_the_checkpoint(env):
    client, job = _running_job(env, "pause", max_steps=60, seed=6, past_step=4)
    assert _worker_job(env) == job["id"]
    assert client.post(f"/fine_tuning/jobs/{job['id']}/pause").json()["status"] == "paused"
    _wait_until_the_worker_lets_go(env, job["id"])  # its stop checkpoint is saved: no more steps come
    paused_at = max(_steps(client, job["id"]))
    assert client.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] == "paused"
    # 409 still_stopping until the worker has saved its stop checkpoint and released the lease.
    deadline = time.monotonic() + 60
    while (r := client.post(f"/fine_tuning/jobs/{job['id']}/resume")).status_code == 409:
        assert r.json()["error"]["code"] == "still_stopping" and time.monotonic() < deadline
        time.sleep(0.5)
    assert r.json()["status"] == "queued"
    job = wait_for(client, job["id"], stack=env["stack"])
    assert job["status"] == "succeeded", (job["error"], env["stack"].logs())
    events = all_events(client, job["id"])
    resumed = [e for e in events if e["message"].startswith("Resuming from checkpoint-")]
    assert resumed, [e["message"] for e in events]
    checkpoint_step = resumed[0]["data"]["checkpoint"].rsplit("-", 1)[1]
    assert int(checkpoint_step) >= paused_at
    after = [e["data"]["step"] for e in events[events.index(resumed[0]):] if e["type"] == "metrics"]
    # Training went on from the checkpoint, not from step 0, and finished at max_steps.
    assert min(after) > int(checkpoint_step) and max(after) == 60


def test_worker_registered_what_it_has_and_serves(env):
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from hubtune.db import engine_for
    from hubtune.models import WorkerRecord

    with Session(engine_for(env["db_url"])) as session:
        workers = session.scalars(select(WorkerRecord)).all()
    assert len(workers) == 1
    worker = workers[0]
    assert sorted(worker.queues) == ["prepare", "publish", "train"]
    assert worker.resources["cpu_count"] >= 1 and worker.resources["ram_bytes"] > 0
    import torch

    assert len(worker.resources["gpus"]) == torch.cuda.device_count()
    assert time.time() - worker.last_heartbeat < 30


def test_worker_is_warm_before_its_first_job(env):
    # worker/warm.py: the main process imported the training stack and froze it out of the cyclic GC
    # before forking its task processes, so jobs neither import torch nor pay a full collection of it.
    log = (env["root"] / "worker.log").read_text()
    warm = [line for line in log.splitlines() if "worker warm in" in line]
    assert len(warm) == 1, log[-3000:]
    assert int(warm[0].split("(")[1].split()[0]) > 100_000  # objects frozen
