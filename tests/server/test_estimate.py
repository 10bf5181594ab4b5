"""POST /v1/fine_tuning/jobs/estimate: the estimate from the model's config.json alone, the queue and why."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import delete

from hubtune.estimator import DEFAULT_AUTO_BATCH_SIZE
from hubtune.models import WorkerRecord
from plugin import LocalHub
from tests.server.apitest_helpers import assert_error, auth, upload

GiB = 1024**3
LLAMA_7B = {
    "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 11008,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}
URL = "/v1/fine_tuning/jobs/estimate"


@pytest.fixture
def hub(env, tmp_path):
    """The app's local hub with acme/llama-7b, a public repo: a config.json and no weights at all."""
    local = LocalHub(env.settings.resolved_hub_dir)
    folder = tmp_path / "llama-7b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_7B))
    sha = local.publish("acme/llama-7b", folder=folder, message="config only", private=False)
    return local, sha


@pytest.fixture
def workers(env):
    def clear():
        with env.session() as s:
            s.execute(delete(WorkerRecord))
            s.commit()

    def add(worker_id: str, queue: str, memory_gib: float, *, gpu: bool = True) -> None:
        gpus = [{"name": "NVIDIA H100" if memory_gib > 40 else "NVIDIA L4", "memory_bytes": int(memory_gib * GiB)}]
        resources = {"cpu_count": 8, "ram_bytes": int(memory_gib * GiB), "gpus": gpus if gpu else []}
        with env.session() as s:
            s.add(WorkerRecord(id=worker_id, hostname="h", pid=1, queues=["prepare", queue], resources=resources,
                               started_at=time.time(), last_heartbeat=time.time()))
            s.commit()

    clear()
    yield add
    clear()


def post(env, key, **body):
    return env.client.post(URL, headers=auth(key), json={"model": "acme/llama-7b", **body})


def test_estimate_names_the_smallest_queue_that_fits_and_its_parts(env, hub, workers):
    _, sha = hub
    workers("l4", "gpu-24g", 24)
    workers("h100", "gpu-80g", 80)
    r = post(env, env.key(), tuning={"type": "lora"}, training={"max_seq_length": 512},
             hyperparameters={"batch_size": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "fine_tuning.estimate"
    assert body["model"] == "acme/llama-7b" and body["model_revision"] == sha
    assert body["queue"] == "gpu-80g" and body["fits"] is True
    assert "gpu-80g" in body["reason"] and "NVIDIA H100" in body["reason"]
    assert body["total_bytes"] == sum(body["parts"].values())
    assert set(body["parts"]) == {"weights_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes",
                                  "overhead_bytes"}
    # The base is llama-2-7b's 6,738,415,616 parameters; LoRA r=8 on all seven projections adds 19,988,480.
    assert body["params"] == {"total": 6_738_415_616 + 19_988_480, "trainable": 19_988_480}
    assert body["parts"]["optimizer_bytes"] == 8 * 19_988_480  # AdamW: two float32 states per trainable
    assert body["precision"] == "bf16" and body["task"] == "causal_lm"
    assert (body["batch_size"], body["seq_len"]) == (4, 512)
    assert body["suggestions"] == []


def test_full_fine_tune_that_fits_no_worker_gets_suggestions(env, hub, workers):
    workers("l4", "gpu-24g", 24)
    body = post(env, env.key(), tuning={"type": "full"}, training={"max_seq_length": 512},
                hyperparameters={"batch_size": 4}).json()
    assert body["fits"] is False and body["queue"] is None
    assert "no live worker can fit this job" in body["reason"]
    assert body["parts"]["gradients_bytes"] == 4 * 6_738_415_616
    assert body["suggestions"], body["reason"]
    first = body["suggestions"][0]
    assert "qlora" in str(first["value"]) and first["queue"] == "gpu-24g" and first["total_bytes"] <= 24 * GiB


def test_without_workers_or_data_auto_batch_uses_the_default_and_the_default_queue(env, hub, workers):
    body = post(env, env.key()).json()
    assert body["queue"] == "train" and body["fits"] is False
    assert "no live worker" in body["reason"]
    assert body["batch_size"] == DEFAULT_AUTO_BATCH_SIZE


def test_a_training_file_may_be_given_and_must_exist(env, hub, workers):
    key = env.key()
    file_id = upload(env.client, key)["id"]
    assert post(env, key, training_file=file_id).status_code == 200
    assert_error(post(env, key, training_file="file-nope"), 400, param="training_file", code="file_not_found")


def test_models_it_cannot_estimate_are_4xx_naming_the_model(env, hub, workers, tmp_path):
    local, _ = hub
    key = env.key()
    assert_error(post(env, key, model="acme/missing"), 400, param="model", code="model_not_found")
    assert_error(post(env, key, model="acme/llama-7b@nope"), 400, param="model", code="model_not_found")

    (tmp_path / "no-config").mkdir()
    (tmp_path / "no-config" / "README.md").write_text("hi")
    local.publish("acme/no-config", folder=tmp_path / "no-config", message="m", private=False)
    assert_error(post(env, key, model="acme/no-config"), 400, param="model", code="model_config_not_found")

    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768}))
    local.publish("acme/gpt2", folder=tmp_path / "gpt2", message="m", private=False)
    error = assert_error(post(env, key, model="acme/gpt2"), 400, param="model", code="cannot_estimate")
    assert "gpt2" in error["message"]

    error = assert_error(post(env, key, tuning={"type": "lora", "target_modules": ["nope"]}), 400,
                         param="tuning.target_modules")
    assert "q_proj" in error["message"]


def test_estimate_needs_an_api_key(env, hub):
    r = env.client.post(URL, json={"model": "acme/llama-7b"})
    assert_error(r, 401, param=None, code="invalid_api_key")
