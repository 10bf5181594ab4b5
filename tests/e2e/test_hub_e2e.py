"""Issue 4 end to end: real server + Celery worker processes on PostgreSQL + Redis, the unmodified
huggingface_hub client against the hub-compatible test server (with a token, fault injection and 403s)."""

from __future__ import annotations

import base64
import json
import time

import openai
import pytest
from huggingface_hub import ModelCard, hf_hub_download
from sqlalchemy import create_engine, select

from hubtune.models import Job
from tests.e2e.checks import assert_same_outputs, outputs_from_hub_by_repo_id
from testkit.tiny_models import make_tiny_bert, write_classification_jsonl
from testkit.hubserver import HubServer
from tests.worker.hub_world import Receiver
from testkit.services import postgres_database, redis_url
from testkit.stack import Stack, upload, wait_for

pytestmark = pytest.mark.e2e
HUB_TOKEN = "hub-e2e-token"
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
HOOK_SECRET = "hub-hook-secret"
LICENSED_CARD = b"---\nlicense: apache-2.0\nlanguage: en\n---\n# tiny bert\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-e2e")
    receiver = Receiver()
    with postgres_database("hubtune_hub") as db_url, HubServer(root / "hub-server", token=HUB_TOKEN) as hub:
        stack = Stack(root, {
            "HUBTUNE_DATABASE_URL": db_url, "HUBTUNE_BROKER_URL": redis_url(12),
            "HUBTUNE_HUB_BACKEND": "hf", "HUBTUNE_HUB_ENDPOINT": hub.url, "HUBTUNE_HUB_TOKEN": HUB_TOKEN,
            "HF_HUB_DISABLE_XET": "1", "HUBTUNE_HEARTBEAT_SECONDS": "1",
            "HUBTUNE_HUB_RETRY_BASE_SECONDS": "0.2", "HUBTUNE_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
            "HUBTUNE_WEBHOOK_SECRET": WHSEC, "HUBTUNE_WEBHOOK_ALLOWED_PRIVATE": "127.0.0.1",
            "HUBTUNE_HUB_WEBHOOK_SECRET": HOOK_SECRET,
        })
        stack.run("hub", "import", str(make_tiny_bert(root / "tiny-bert")), "tiny/bert")
        # A licensed card (the pinned commit), then a later commit the job must NOT use.
        pinned = hub.hub.commit("tiny/bert", files={"README.md": LICENSED_CARD}, message="card", branch="main")
        hub.hub.commit("tiny/bert", files={"NOTES.md": b"later"}, message="later", branch="main")
        # Public: alice reads it through the server's token, which shows her no other owner's private repo.
        hub.hub.create_repo("acme/tickets", repo_type="dataset", private=False)
        data = write_classification_jsonl(root / "tickets.jsonl", n=48, seed=1).read_bytes()
        dataset_sha = hub.hub.commit("acme/tickets", files={"data/train.jsonl": data}, message="data",
                                     branch="main", repo_type="dataset")
        stack.start()
        key = stack.run("keys", "create", "--name", "alice").strip()
        try:
            yield {"stack": stack, "hub": hub, "key": key, "root": root, "db_url": db_url, "pinned": pinned,
                   "dataset_sha": dataset_sha, "receiver": receiver}
        finally:
            stack.stop()
            receiver.server.shutdown()


def _job(env, **body) -> dict:
    client = env["stack"].client(env["key"])
    base = {"model": "tiny/bert", "task": "sequence_classification", "seed": 3,
            "training": {"learning_rate": 0.01, "max_seq_length": 32}, "hyperparameters": {"n_epochs": 2, "batch_size": 8}}
    response = client.post("/fine_tuning/jobs", json={**base, **body})
    assert response.status_code == 200, response.text
    return wait_for(client, response.json()["id"], stack=env["stack"])


def _small_file(env, name: str) -> str:
    client = env["stack"].client(env["key"])
    return upload(client, write_classification_jsonl(env["root"] / f"{name}.jsonl", n=24, seed=2))


def test_pinned_model_and_hub_dataset_publish_a_loadable_adapter_with_a_card_and_a_signed_notice(env):
    hub, receiver = env["hub"], env["receiver"]
    job = _job(env, model=f"tiny/bert@{env['pinned']}", training_file="hf://datasets/acme/tickets/data/train.jsonl",
               hub={"repo_id": "alice/tickets-lora"}, webhook_url=receiver.url)
    assert job["status"] == "succeeded", (job["error"], env["stack"].logs())
    assert job["model_revision"] == env["pinned"]  # the pinned commit, not the newer head
    assert job["training_file"] == f"hf://datasets/acme/tickets@{env['dataset_sha']}/data/train.jsonl"
    repo_id, commit = job["fine_tuned_model"].split("@")

    # The adapter loads back by repo id with the unmodified client and reproduces the worker's outputs.
    reference = job["result"]["reference"]
    loaded = outputs_from_hub_by_repo_id(
        endpoint=hub.url, token=HUB_TOKEN, base="tiny/bert", base_rev=job["model_revision"], repo_id=repo_id,
        revision=commit, task="sequence_classification", inputs=reference["inputs"], cache=env["root"] / "cache-1")
    assert_same_outputs(reference, loaded)

    readme = hf_hub_download(repo_id, "README.md", revision=commit, endpoint=hub.url, token=HUB_TOKEN,
                             cache_dir=env["root"] / "cache-card")
    card = ModelCard.load(readme)
    data = card.data.to_dict()
    assert data["base_model"] == "tiny/bert" and data["base_model_relation"] == "adapter"
    assert data["library_name"] == "peft" and data["pipeline_tag"] == "text-classification"
    assert data["datasets"] == ["acme/tickets"] and data["license"] == "apache-2.0"
    assert "hubtune" in data["tags"] and "lora" in data["tags"]
    assert data["model-index"][0]["results"][0]["metrics"], data
    assert "![Training and validation loss](loss_curve.png)" in card.text
    assert "AutoPeftModelForSequenceClassification" in card.text and "Hardware and time" in card.text
    assert "Data report" in card.text and env["dataset_sha"] in card.text
    png = hf_hub_download(repo_id, "loss_curve.png", revision=commit, endpoint=hub.url, token=HUB_TOKEN,
                          cache_dir=env["root"] / "cache-card")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # The completion notice verifies with the openai client's webhook verifier.
    assert receiver.received, "no completion notification arrived"
    body, headers = receiver.received[-1]
    event = openai.OpenAI(api_key="unused", webhook_secret=WHSEC).webhooks.unwrap(body.decode(), headers)
    assert event.type == "fine_tuning.job.succeeded" and event.data.id == job["id"]
    with pytest.raises(openai.InvalidWebhookSignatureError):
        openai.OpenAI(api_key="unused", webhook_secret="whsec_" + base64.b64encode(b"x" * 32).decode()) \
            .webhooks.verify_signature(body.decode(), headers)


def test_publish_retries_through_two_500s(env):
    hub = env["hub"]
    commits_before = hub.count("commit")
    hub.fail_next(2, status=500)
    job = _job(env, training_file=_small_file(env, "retry"), hub={"repo_id": "alice/retried"})
    assert job["status"] == "succeeded", (job["error"], env["stack"].logs())
    assert hub.count("commit") - commits_before == 3
    assert job["fine_tuned_model"].startswith("alice/retried@")


def test_403_fails_clearly_keeps_the_artifact_and_publish_succeeds_once_allowed(env):
    hub, client = env["hub"], env["stack"].client(env["key"])
    hub.forbid("alice/locked")
    receiver = env["receiver"]
    seen = len(receiver.received)
    job = _job(env, training_file=_small_file(env, "locked"), hub={"repo_id": "alice/locked"},
               webhook_url=receiver.url)
    assert job["status"] == "failed", env["stack"].logs()
    assert job["error"]["code"] == "hub_auth_error", job["error"]
    assert "403" in job["error"]["message"] and "alice/locked" in job["error"]["message"]
    assert "/publish" in job["error"]["message"] and HUB_TOKEN not in json.dumps(job)
    engine = create_engine(env["db_url"])
    with engine.connect() as conn:
        artifact = conn.execute(select(Job.artifact_path).where(Job.id == job["id"])).scalar_one()
    from pathlib import Path

    assert (Path(artifact) / "adapter_model.safetensors").is_file()

    hub.allow("alice/locked")
    response = client.post(f"/fine_tuning/jobs/{job['id']}/publish")
    assert response.status_code == 200 and response.json()["status"] == "running", response.text
    job = wait_for(client, job["id"], stack=env["stack"])
    assert job["status"] == "succeeded", (job["error"], env["stack"].logs())
    assert job["fine_tuned_model"].startswith("alice/locked@") and job["error"] is None
    assert (Path(artifact) / "adapter_model.safetensors").is_file()
    engine.dispose()
    # One notice when it failed, one when the re-publish succeeded; the hub token is in no log.
    verifier = openai.OpenAI(api_key="unused", webhook_secret=WHSEC).webhooks
    deadline = time.monotonic() + 30
    while len(receiver.received) < seen + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    types = [verifier.unwrap(b.decode(), h).type for b, h in receiver.received[seen:]]
    assert types == ["fine_tuning.job.failed", "fine_tuning.job.succeeded"]
    assert HUB_TOKEN not in env["stack"].logs()


def test_checkpoints_go_to_their_branch_and_lora_is_merged_beside_the_adapter(env):
    hub = env["hub"]
    job = _job(env, training_file=_small_file(env, "options"),
               hub={"repo_id": "alice/options", "branch": "release", "private": True, "push_checkpoints": True,
                    "checkpoint_branch": "ckpts", "merge": True})
    assert job["status"] == "succeeded", (job["error"], env["stack"].logs())
    repo_id, commit = job["fine_tuned_model"].split("@")
    assert hub.hub.resolve(repo_id, revision="release") == commit
    assert hub.hub.repo_info(repo_id).get("private") is True
    files = set(hub.hub.tree(repo_id, revision=commit))
    assert {"adapter_model.safetensors", "merged/config.json", "merged/model.safetensors"} <= files
    deadline = time.monotonic() + 60
    while "ckpts" not in hub.hub.branches(repo_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    pushed = set(hub.hub.tree(repo_id, revision="ckpts"))
    assert any(p.startswith("checkpoint-") and p.endswith("adapter_model.safetensors") for p in pushed), pushed
    assert not any(p.endswith(("optimizer.pt", "scheduler.pt")) for p in pushed), pushed


def test_a_hub_push_delivered_by_webhook_trains_on_exactly_that_commit(env):
    hub, stack = env["hub"], env["stack"]
    client = stack.client(env["key"])
    trigger = client.post("/hub/triggers", json={"repo_id": "acme/tickets", "path_pattern": "data/*.jsonl", "job": {
        "model": "tiny/bert", "training_file": "hf://datasets/acme/tickets/data/train.jsonl",
        "task": "sequence_classification", "training": {"max_seq_length": 32},
        "hyperparameters": {"n_epochs": 1, "batch_size": 8}, "hub": {"repo_id": "alice/from-webhook"}}})
    assert trigger.status_code == 200, trigger.text
    old = hub.hub.resolve("acme/tickets", repo_type="dataset")
    data = write_classification_jsonl(env["root"] / "tickets-v2.jsonl", n=32, seed=9).read_bytes()
    new = hub.hub.commit("acme/tickets", files={"data/train.jsonl": data}, message="v2", branch="main",
                         repo_type="dataset")
    hub.hub.commit("acme/tickets", files={"data/train.jsonl": b"{}"}, message="broken v3", branch="main",
                   repo_type="dataset")  # the head moves on; the job must still train on `new`
    delivery = {"event": {"action": "update", "scope": "repo.content"},
                "repo": {"type": "dataset", "name": "acme/tickets", "headSha": new, "owner": {"id": "1"}},
                "updatedRefs": [{"ref": "refs/heads/main", "oldSha": old, "newSha": new}], "webhook": {"id": "w"}}
    url = f"{stack.url}/v1/hub/webhooks"
    import httpx

    assert httpx.post(url, json=delivery, headers={"X-Webhook-Secret": "nope"}).status_code == 401
    answer = httpx.post(url, json=delivery, headers={"X-Webhook-Secret": HOOK_SECRET})
    assert answer.status_code == 200, answer.text
    (job_id,) = answer.json()["jobs"]
    assert httpx.post(url, json=delivery, headers={"X-Webhook-Secret": HOOK_SECRET}).json()["jobs"] == []
    job = wait_for(client, job_id, stack=stack)
    assert job["status"] == "succeeded", (job["error"], stack.logs())
    assert job["training_file"] == f"hf://datasets/acme/tickets@{new}/data/train.jsonl"
    assert job["data_report"]["examples"] == 32
