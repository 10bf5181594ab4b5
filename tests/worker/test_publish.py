"""worker/publish.py against the hub-compatible test server: retries, the model card, the license."""

from __future__ import annotations

import pytest

from hubtune.models import Job
from hubtune.settings import get_settings
from plugin.errors import HubAuthError
from tests.server.apitest_helpers import auth
from tests.worker.hub_world import (  # noqa: F401  (world: a fixture)
    EVALUATION, OWNER_TOKEN, artifact, owner_of, owner_token_hub, publishing_job, world,
)

def test_publish_retries_5xx_and_a_moved_branch_then_fails_fast_on_403(world, tmp_path):
    from worker.publish import publish_with_retries

    env, server = world
    hub, folder, retries = owner_token_hub(server), artifact(tmp_path), []
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


def publish_owned(env, server, tmp_path, *, tuning: str, evaluation) -> tuple[str, str]:
    """Publish a trained job owned by a key that stored the owner's hub token; (repo id, commit)."""
    from worker.publish import run_publish

    env.client.post("/v1/hub/credentials", headers=auth(key := env.key()), json={"token": OWNER_TOKEN})
    job_id = publishing_job(env, server, tmp_path, tuning=tuning, evaluation=evaluation)
    with env.session() as s:
        s.get(Job, job_id).owner = owner_of(env, key)
        s.commit()
    run_publish(job_id, get_settings())
    with env.session() as s:
        job = s.get(Job, job_id)
        assert job.status == "succeeded", job.error
        return tuple(job.fine_tuned_model.split("@"))


def test_full_fine_tune_card_carries_the_evaluation_and_the_license(world, tmp_path):
    from huggingface_hub import ModelCard

    env, server = world
    repo_id, commit = publish_owned(env, server, tmp_path, tuning="full", evaluation=EVALUATION)
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

    env, server = world
    repo_id, commit = publish_owned(env, server, tmp_path, tuning="adapter", evaluation=None)
    text = (server.hub.snapshot(repo_id, revision=commit) / "README.md").read_text()
    assert "base_model_relation: adapter" in text and "load_for_inference" in text
