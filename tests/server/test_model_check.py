"""Job creation asks the hub, as the key's owner sees it, whether the base model exists: a 400 naming
`model` (model_not_found, as the estimate endpoint answers) when the hub says no within
model_check_seconds, on the local and the hf backend; a hub that is silent or unreachable leaves the
decision to prepare (the job is created as before)."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from hubtune.queue import PREPARE
from plugin import LocalHub
from testkit.hubserver import HubServer
from tests.server.apitest_helpers import assert_error, auth, make_env, upload

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
TOKEN = "hf_owner_only"
BERT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
        "num_attention_heads": 2, "vocab_size": 100, "max_position_embeddings": 64}


def publish_base(hub: LocalHub, tmp_path, repo_id: str = "acme/base") -> str:
    folder = tmp_path / "base-model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(BERT))
    return hub.publish(repo_id, folder=folder, message="a base model", private=False)  # a public base: any key may read it


def create(env, key: str, model: str):
    body = {"model": model, "training_file": upload(env.client, key)["id"], "task": "sequence_classification"}
    return env.client.post("/v1/fine_tuning/jobs", headers=auth(key), json=body)


def estimate(env, key: str, model: str):
    body = {"model": model, "task": "sequence_classification"}
    return env.client.post("/v1/fine_tuning/jobs/estimate", headers=auth(key), json=body)


@pytest.fixture(autouse=True)
def _no_saved_hf_token(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))


def test_local_hub_missing_model_or_revision_is_a_400_at_create(db_url, tmp_path):
    env = make_env(db_url, tmp_path / "data", model_check_seconds=2)
    publish_base(LocalHub(env.settings.resolved_hub_dir), tmp_path)
    key = env.key()
    assert create(env, key, "acme/base").status_code == 200
    for model in ("acme/missing", "acme/base@no-such-branch"):
        error = assert_error(create(env, key, model), 400, param="model", code="model_not_found")
        assert model in error["message"]
        # The estimate endpoint answers the same for the same model.
        assert_error(estimate(env, key, model), 400, param="model", code="model_not_found")
    assert [task for task, _, _ in env.doorbells()] == [PREPARE]  # only the good job was created


def test_hf_backend_asks_the_hub_with_the_owners_credential(db_url, tmp_path):
    with HubServer(tmp_path / "hub-server", token=TOKEN) as server:
        publish_base(server.hub, tmp_path)
        env = make_env(db_url, tmp_path / "data", hub_backend="hf", hub_endpoint=server.url, model_check_seconds=5)
        key = env.key("alice")
        # No credential and no server token: the hub refuses to say, so creation does not decide.
        assert create(env, key, "acme/missing").status_code == 200
        stored = env.client.post("/v1/hub/credentials", headers=auth(key), json={"name": "mine", "token": TOKEN})
        assert stored.status_code == 200, stored.text
        assert create(env, key, "acme/base").status_code == 200
        assert_error(create(env, key, "acme/missing"), 400, param="model", code="model_not_found")
        assert_error(estimate(env, key, "acme/missing"), 400, param="model", code="model_not_found")
        assert server.count("info") >= 4  # each create asked the hub, and the estimate


@pytest.mark.parametrize("hub", ["silent", "refusing"])
def test_a_hub_that_does_not_answer_leaves_it_to_prepare(db_url, tmp_path, hub):
    # silent: accepts connections and never answers; refusing: nothing listens on the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    if hub == "silent":
        sock.listen(16)
    port = sock.getsockname()[1]
    if hub == "refusing":
        sock.close()
    try:
        env = make_env(db_url, tmp_path / "data", hub_backend="hf", hub_endpoint=f"http://127.0.0.1:{port}",
                       model_check_seconds=0.5)
        key = env.key()
        started = time.monotonic()
        r = create(env, key, "acme/anything")
        assert r.status_code == 200, r.text
        assert time.monotonic() - started < 3
        assert r.json()["status"] == "validating_files"
        assert [task for task, _, _ in env.doorbells()] == [PREPARE]
    finally:
        sock.close()
