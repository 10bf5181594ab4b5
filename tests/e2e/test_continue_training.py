"""Issue 18 §2 end to end: continue from an earlier fine-tune the way an `openai` script does. Real server
and Celery worker processes on PostgreSQL + Redis train a LoRA job on tiny/llama and publish it to the
hub-compatible test server; then `model=<its fine_tuned_model>` and `model=<one of its checkpoints>`
each train the same adapter further. The child starts where the parent ended, records its lineage on
the job and the card, and its adapter still names the first base at its commit. Another owner's ids
are not found."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download

from testkit.hubserver import HubServer
from testkit.services import postgres_database, redis_url
from testkit.stack import Stack, wait_for
from testkit.tiny_models import make_tiny_llama, write_chat_jsonl, write_preference_jsonl

pytestmark = pytest.mark.e2e
HUB_TOKEN = "continue-e2e-token"
TRAINING = {"learning_rate": 0.03, "max_seq_length": 64, "save_steps": 2, "validation_split": 0.0}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("continue-e2e")
    with postgres_database("hubtune_continue") as db_url, HubServer(root / "hub-server", token=HUB_TOKEN) as hub:
        stack = Stack(root, {
            "HUBTUNE_DATABASE_URL": db_url, "HUBTUNE_BROKER_URL": redis_url(9),
            "HUBTUNE_HUB_BACKEND": "hf", "HUBTUNE_HUB_ENDPOINT": hub.url, "HUBTUNE_HUB_TOKEN": HUB_TOKEN,
            "HF_HUB_DISABLE_XET": "1", "HUBTUNE_HEARTBEAT_SECONDS": "1",
        })
        stack.run("hub", "import", str(make_tiny_llama(root / "tiny-llama")), "tiny/llama")
        stack.start()
        keys = {name: stack.run("keys", "create", "--name", name).strip() for name in ("alice", "mallory")}
        try:
            yield {"stack": stack, "hub": hub, "keys": keys, "root": root}
        finally:
            stack.stop()


def _client(env, who: str = "alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{env['stack'].url}/v1", api_key=env["keys"][who], max_retries=0, timeout=60)


def _run(env, client: openai.OpenAI, model: str, file_id: str, n_epochs: int, name: str) -> dict:
    job = client.fine_tuning.jobs.create(
        model=model, training_file=file_id, seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": n_epochs, "batch_size": 8}}},
        extra_body={"task": "causal_lm", "training": TRAINING, "hub": {"repo_id": f"alice/{name}"}},
    )
    done = wait_for(env["stack"].client(env["keys"]["alice"]), job.id, stack=env["stack"])
    assert done["status"] == "succeeded", (done["error"], env["stack"].logs())
    return done


def _losses(env, job_id: str) -> list[float]:
    series = env["stack"].client(env["keys"]["alice"]).get(f"/fine_tuning/jobs/{job_id}/metrics",
                                                           params={"limit": 100}).json()["data"]
    return [p["data"]["train_loss"] for p in series if p["data"].get("train_loss") is not None]


def _hub_file(env, repo_id: str, name: str) -> Path:
    return Path(hf_hub_download(repo_id, name, endpoint=env["hub"].url, token=HUB_TOKEN,
                                cache_dir=env["root"] / "cache"))


@pytest.fixture(scope="module")
def parent(env):
    client = _client(env)
    data = write_chat_jsonl(env["root"] / "chat.jsonl", 32)
    file_id = client.files.create(file=data.open("rb"), purpose="fine-tune").id
    job = _run(env, client, "tiny/llama", file_id, 4, "chat-parent")
    return {"job": job, "file_id": file_id, "losses": _losses(env, job["id"])}


@pytest.mark.parametrize("start", ["fine_tuned_model", "checkpoint"])
def test_a_child_trains_the_parents_adapter_further(env, parent, start):
    client = _client(env)
    if start == "checkpoint":
        checkpoints = client.fine_tuning.jobs.checkpoints.list(parent["job"]["id"]).data
        assert checkpoints, "the parent saved no checkpoint"
        latest = max(checkpoints, key=lambda c: c.step_number)
        model = latest.fine_tuned_model_checkpoint
        assert model == f"{parent['job']['fine_tuned_model']}:ckpt-step-{latest.step_number}"
    else:
        model = parent["job"]["fine_tuned_model"]
    child = _run(env, client, model, parent["file_id"], 1, f"chat-child-{start.replace('_', '-')}")

    assert child["model"] == model
    lineage = child["lineage"]
    assert lineage["parent"]["job_id"] == parent["job"]["id"]
    assert lineage["parent"]["type"] == ("checkpoint" if start == "checkpoint" else "job")
    assert lineage["kind"] == "adapter"
    assert (lineage["base_model"], lineage["base_revision"]) == ("tiny/llama", parent["job"]["model_revision"])
    assert child["model_revision"] == parent["job"]["model_revision"]
    assert child["tuning"]["type"] == "lora"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(child["id"], limit=100).data]
    assert "Continuing the lora adapter of " in " ".join(messages), messages

    # It starts where the parent ended, far below the parent's own first loss.
    first, last = parent["losses"][0], parent["losses"][-1]
    assert first - last > 1.0, parent["losses"]
    assert _losses(env, child["id"])[0] < last + 0.25 * (first - last), (_losses(env, child["id"]), parent["losses"])

    # Published as an adapter of the first base, at its commit, with the lineage on the card.
    repo_id = child["fine_tuned_model"].split("@")[0]
    config = json.loads(_hub_file(env, repo_id, "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny/llama"
    assert config["revision"] == parent["job"]["model_revision"]
    card = _hub_file(env, repo_id, "README.md").read_text()
    assert "base_model: tiny/llama" in card and "## Lineage" in card
    assert parent["job"]["id"] in card.split("## Lineage", 1)[1]


def test_an_adapter_repo_on_the_hub_continues(env, parent):
    """`model` naming a hub repo that holds an adapter, not one of the owner's jobs (here: alice's
    adapter copied to a new repo, as a user brings one made elsewhere): prepare reads its
    adapter_config.json and trains that adapter further on the base it names, at its revision."""
    api = HfApi(endpoint=env["hub"].url, token=HUB_TOKEN)
    folder = snapshot_download(parent["job"]["fine_tuned_model"].split("@")[0], endpoint=env["hub"].url,
                               token=HUB_TOKEN, cache_dir=env["root"] / "cache-copy")
    api.create_repo("alice/brought-lora", private=True, exist_ok=True)
    commit = api.upload_folder(repo_id="alice/brought-lora", folder_path=folder).oid
    child = _run(env, _client(env), "alice/brought-lora", parent["file_id"], 1, "chat-child-hub")
    lineage = child["lineage"]
    assert lineage["parent"] == {"type": "hub", "repo_id": "alice/brought-lora", "commit": commit}
    assert (lineage["base_model"], lineage["base_revision"]) == ("tiny/llama", parent["job"]["model_revision"])
    first, last = parent["losses"][0], parent["losses"][-1]
    assert _losses(env, child["id"])[0] < last + 0.25 * (first - last)


@pytest.mark.parametrize("form", ["job_id", "checkpoint"])
def test_another_owners_job_and_checkpoints_are_not_found(env, parent, form):
    mallory = _client(env, "mallory")
    file_id = mallory.files.create(file=(env["root"] / "chat.jsonl").open("rb"), purpose="fine-tune").id
    model = parent["job"]["id"] if form == "job_id" else \
        _client(env).fine_tuning.jobs.checkpoints.list(parent["job"]["id"]).data[0].id
    with pytest.raises(openai.BadRequestError) as refused:
        mallory.fine_tuning.jobs.create(model=model, training_file=file_id)
    assert refused.value.body["code"] == "model_not_found" and refused.value.body["param"] == "model"
    assert parent["job"]["id"] not in refused.value.body["message"] or form == "job_id"


def test_an_sft_job_then_a_dpo_job_from_its_result(env, parent):
    """The common chain: the SFT job's fine_tuned_model as `model` of a DPO job in OpenAI's shape. DPO
    trains the SFT adapter further, and its reference is that adapter (trl's frozen copy), so its first
    step's loss is log 2: policy and reference agree before any update."""
    client = _client(env)
    pairs = write_preference_jsonl(env["root"] / "pairs.jsonl", 48, seed=1)
    file_id = client.files.create(file=pairs.open("rb"), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model=parent["job"]["fine_tuned_model"], training_file=file_id, seed=3,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 1, "batch_size": 8}}},
        extra_body={"training": {"learning_rate": 0.005, "max_seq_length": 64, "validation_split": 0.25},
                    "hub": {"repo_id": "alice/chat-dpo"}},
    )
    done = wait_for(env["stack"].client(env["keys"]["alice"]), job.id, stack=env["stack"])
    assert done["status"] == "succeeded", (done["error"], env["stack"].logs())
    assert done["method"]["type"] == "dpo" and done["method"]["dpo"]["hyperparameters"]["beta"] == 0.1
    assert done["lineage"]["parent"]["job_id"] == parent["job"]["id"] and done["tuning"]["type"] == "lora"
    messages = " ".join(e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data)
    assert "Continuing the lora adapter of " in messages
    assert abs(_losses(env, job.id)[0] - 0.6931) < 0.01, _losses(env, job.id)
    repo_id = done["fine_tuned_model"].split("@")[0]
    config = json.loads(_hub_file(env, repo_id, "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == ("tiny/llama", parent["job"]["model_revision"])
    card = _hub_file(env, repo_id, "README.md").read_text()
    assert "## Lineage" in card and parent["job"]["id"] in card
