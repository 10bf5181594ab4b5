"""`model` naming an earlier fine-tune (issue 18 §2): a job id, its fine_tuned_model, a checkpoint id or a
`fine_tuned_model_checkpoint` resolves to the owner's parent, records the lineage, and is echoed back;
another owner's jobs and checkpoints answer exactly as missing ones do."""

from __future__ import annotations

import pytest

from hubtune.lifecycle import Status
from hubtune.models import Checkpoint, Job, JobEvent, now
from tests.server.apitest_helpers import assert_error, auth, create_job, upload

BASE = "sentence-transformers/all-MiniLM-L6-v2"


def _finished_parent(env, key: str, *, tuning: str = "lora") -> tuple[dict, int]:
    """A job of `key`'s owner made to look trained and published (status, artifact, model, commit), with
    one checkpoint at step 20."""
    f = upload(env.client, key)
    job = create_job(env.client, key, f["id"], task="sequence_classification", tuning={"type": tuning})
    with env.session() as s:
        row = s.get(Job, job["id"])
        row.status, row.model_revision = Status.SUCCEEDED.value, "a" * 40
        row.artifact_path, row.fine_tuned_model = "/kept/artifact", "acme/minilm-tickets@" + "b" * 40
        row.hub_repo, row.hub_commit = "acme/minilm-tickets", "b" * 40
        spec = dict(row.spec)
        spec["task"] = "sequence_classification"
        row.spec = spec
        ckpt = Checkpoint(job_id=row.id, step=20, path="/kept/checkpoint-20", metrics={}, created_at=now())
        s.add(ckpt)
        s.commit()
        return job, ckpt.id


def _create(env, key: str, model: str):
    return env.client.post("/v1/fine_tuning/jobs", headers=auth(key),
                           json={"model": model, "training_file": upload(env.client, key)["id"]})


@pytest.mark.parametrize("form", ["job_id", "fine_tuned_model", "checkpoint_id", "checkpoint_name", "ft_checkpoint"])
def test_a_parent_reference_resolves_to_the_lineage(env, form):
    key = env.key("acme")
    parent, ckpt_id = _finished_parent(env, key)
    model = {
        "job_id": parent["id"],
        "fine_tuned_model": "acme/minilm-tickets@" + "b" * 40,
        "checkpoint_id": f"ftckpt-{ckpt_id}",
        "checkpoint_name": f"{parent['id']}:ckpt-step-20",
        "ft_checkpoint": "acme/minilm-tickets@" + "b" * 40 + ":ckpt-step-20",
    }[form]
    r = _create(env, key, model)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["model"] == model  # echoed as given, as OpenAI does
    lineage = job["lineage"]
    assert lineage["parent"]["job_id"] == parent["id"]
    assert lineage["parent"]["type"] == ("checkpoint" if "checkpoint" in form else "job")
    assert "ref" not in lineage["parent"]  # the storage path stays on the server
    if lineage["parent"]["type"] == "checkpoint":
        assert lineage["parent"]["step"] == 20 and lineage["parent"]["checkpoint_id"] == f"ftckpt-{ckpt_id}"
    assert lineage["kind"] == "adapter"
    assert lineage["base_model"] == BASE and lineage["base_revision"] == "a" * 40
    with env.session() as s:
        messages = [e.message for e in s.query(JobEvent).filter_by(job_id=job["id"]).order_by(JobEvent.id)]
    assert messages[1].startswith("Continuing from ") and parent["id"] in messages[1]


def test_a_full_fine_tune_parent_is_a_new_base(env):
    key = env.key("acme")
    parent, _ = _finished_parent(env, key, tuning="full")
    lineage = _create(env, key, parent["id"]).json()["lineage"]
    assert lineage["kind"] == "full"
    assert (lineage["base_model"], lineage["base_revision"]) == ("acme/minilm-tickets", "b" * 40)
    assert lineage["root"] == BASE


def test_a_grandchild_keeps_the_first_base_and_its_ancestors(env):
    key = env.key("acme")
    parent, _ = _finished_parent(env, key)
    child = _create(env, key, parent["id"]).json()
    with env.session() as s:
        row = s.get(Job, child["id"])
        row.status, row.artifact_path = Status.SUCCEEDED.value, "/kept/child"
        row.spec = {**row.spec, "task": "sequence_classification"}
        s.commit()
    lineage = _create(env, key, child["id"]).json()["lineage"]
    assert lineage["base_model"] == BASE and lineage["base_revision"] == "a" * 40
    assert lineage["ancestors"] == [parent["id"]] and lineage["parent"]["job_id"] == child["id"]


def test_a_child_of_a_job_that_continued_a_hub_adapter(env):
    """The parent's own lineage names a hub repo, not a job: the child keeps its base and has no ancestor."""
    key = env.key("acme")
    parent, _ = _finished_parent(env, key)
    with env.session() as s:
        s.get(Job, parent["id"]).lineage = {
            "parent": {"type": "hub", "repo_id": "acme/brought-lora", "commit": "c" * 40}, "kind": "adapter",
            "base_model": BASE, "base_revision": "d" * 40, "weights": None, "root": BASE,
            "task": "sequence_classification", "tuning": {"type": "lora"}, "ancestors": []}
        s.commit()
    r = _create(env, key, parent["id"])
    assert r.status_code == 200, r.text
    lineage = r.json()["lineage"]
    assert (lineage["base_model"], lineage["base_revision"]) == (BASE, "d" * 40) and lineage["ancestors"] == []


@pytest.mark.parametrize("form", ["job_id", "checkpoint_id", "checkpoint_name", "fine_tuned_model"])
def test_another_owners_parent_is_invisible(env, form):
    alice, mallory = env.key("alice"), env.key("mallory")
    parent, ckpt_id = _finished_parent(env, alice)
    model = {"job_id": parent["id"], "checkpoint_id": f"ftckpt-{ckpt_id}",
             "checkpoint_name": f"{parent['id']}:ckpt-step-20",
             "fine_tuned_model": "acme/minilm-tickets@" + "b" * 40}[form]
    r = _create(env, mallory, model)
    if form == "fine_tuned_model":
        # Not mallory's job: an ordinary hub model reference, which the hub answers for (no lineage).
        assert r.status_code == 200 and r.json()["lineage"] is None
        return
    mine = assert_error(r, 400, param="model", code="model_not_found")
    missing = {"job_id": "ftjob-doesnotexist", "checkpoint_id": "ftckpt-999999999",
               "checkpoint_name": "ftjob-doesnotexist:ckpt-step-20"}[form]
    theirs = assert_error(_create(env, mallory, missing), 400, param="model", code="model_not_found")
    assert mine["message"].replace(model, "X") == theirs["message"].replace(missing, "X")


def test_an_unfinished_parent_or_a_missing_step_is_a_clear_400(env):
    key = env.key("acme")
    running = create_job(env.client, key, upload(env.client, key)["id"])
    error = assert_error(_create(env, key, running["id"]), 400, param="model", code="invalid_model")
    assert "validating_files" in error["message"] and "succeeded" in error["message"]
    parent, _ = _finished_parent(env, key)
    error = assert_error(_create(env, key, f"{parent['id']}:ckpt-step-7"), 400, param="model",
                         code="model_not_found")
    assert "no checkpoint at step 7" in error["message"]
