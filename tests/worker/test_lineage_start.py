"""worker/lineage.py on its own: where a continued job starts, and the requests it refuses."""

from __future__ import annotations

import json

import pytest

from hubtune.errors import JobError
from hubtune.spec import JobRequest
from hubtune.storage.local import LocalStorage
from worker.lineage import continued_request, hub_adapter_lineage, lineage_lines, start


class NoHub:
    def snapshot(self, repo_id, revision=None):  # a full parent's weights never come from the hub
        raise AssertionError(f"hub asked for {repo_id}")


def _full_parent(tmp_path, *, published: bool) -> dict:
    artifact = tmp_path / "jobs" / "ftjob-p" / "artifact"
    artifact.mkdir(parents=True)
    (artifact / "config.json").write_text("{}")
    parent = {"type": "job", "job_id": "ftjob-p", "fine_tuned_model": "acme/full@c" if published else None,
              "ref": str(artifact)}
    return {"parent": parent, "kind": "full", "base_model": "acme/full" if published else None,
            "base_revision": "c" * 40 if published else None, "weights": parent, "root": "tiny/bert",
            "task": "sequence_classification", "tuning": {"type": "full"}, "ancestors": []}


def test_a_full_parent_is_the_start_folder_itself(tmp_path):
    lineage = _full_parent(tmp_path, published=True)
    begin = start(lineage, LocalStorage(tmp_path), NoHub())
    assert begin.model_dir == tmp_path / "jobs" / "ftjob-p" / "artifact" and begin.init_adapter is None
    # A full parent is a new base: the child's own tuning applies (here a fresh LoRA on it).
    request = continued_request(JobRequest(model="ftjob-p", training_file="f"), lineage)
    assert request.tuning.type == "lora" and request.task == "sequence_classification"
    assert "That full fine-tune was the starting model" in lineage_lines(lineage)


def test_an_adapter_on_unpublished_full_weights_is_refused(tmp_path):
    lineage = _full_parent(tmp_path, published=False)
    with pytest.raises(JobError) as refused:
        continued_request(JobRequest(model="ftckpt-3", training_file="f"), lineage)
    assert refused.value.param == "model" and "tuning.type 'full'" in refused.value.message
    full = continued_request(JobRequest(model="ftckpt-3", training_file="f", tuning={"type": "full"}), lineage)
    assert full.tuning.type == "full"


def test_a_task_other_than_the_parents_names_the_field(tmp_path):
    lineage = _full_parent(tmp_path, published=True)
    with pytest.raises(JobError) as refused:
        continued_request(JobRequest(model="ftjob-p", training_file="f", task="causal_lm"), lineage)
    assert refused.value.param == "task" and "sequence_classification" in refused.value.message


def test_a_hub_adapter_names_its_base(tmp_path):
    assert hub_adapter_lineage("acme/base", "c" * 40, tmp_path) is None  # no adapter_config.json: a base
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": "tiny/llama", "revision": "r1", "task_type": "CAUSAL_LM"}))
    lineage = hub_adapter_lineage("acme/adapter", "c" * 40, tmp_path)
    assert lineage["parent"] == {"type": "hub", "repo_id": "acme/adapter", "commit": "c" * 40}
    assert (lineage["base_model"], lineage["base_revision"], lineage["task"]) == ("tiny/llama", "r1", "causal_lm")
    assert lineage["tuning"] == {"type": "lora"}
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA",
                                                              "base_model_name_or_path": "/home/me/llama"}))
    with pytest.raises(JobError) as refused:
        hub_adapter_lineage("acme/adapter", "c" * 40, tmp_path)
    assert refused.value.param == "model" and "not a hub model id" in refused.value.message
