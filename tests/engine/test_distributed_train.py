"""training.n_gpus > 1: two processes under torch.distributed (gloo on CPU), reported by rank 0."""

from __future__ import annotations

import json

import pytest
import torch

from hubtune.spec import Training, Tuning
from tests.engine.conftest import RecordingHooks
from testkit.tiny_models import write_classification_jsonl
from worker.engine.trainer import TRAINING_INFO_FILE, TrainPlan, load_for_inference, reference_outputs, train


def ddp_plan(tmp, tiny_bert, train_file, **training):
    return TrainPlan.in_folder(
        tmp, task="sequence_classification", model_dir=tiny_bert, train_file=train_file, seed=1,
        tuning=Tuning(dropout=0.0), training=Training(learning_rate=1e-2, n_gpus=2, **training),
        n_epochs=2, batch_size=4,
    )


def test_two_processes_train_and_the_artifact_loads(tmp_path, tiny_bert):
    train_file = write_classification_jsonl(tmp_path / "t.jsonl", 32)
    plan = ddp_plan(tmp_path, tiny_bert, train_file)
    hooks = RecordingHooks()
    result = train(plan, hooks)
    assert not result.stopped
    # Both ranks ran in one world of two; each saw half of every global batch of 2 x 4.
    assert result.data["world_size"] == 2
    assert sorted((r["rank"], r["world_size"]) for r in result.data["ranks"]) == [(0, 2), (1, 2)]
    assert result.data["train_examples"] == 24  # 4 of each class held out (grown to 25 % of its 16)
    assert result.steps == 6 == hooks.started["total_steps"]  # 24 / (2 x 4) = 3 steps an epoch
    # Rank 0's reports reached the parent's hooks, once each.
    assert [m["step"] for m in hooks.metrics if "train_loss" in m] == list(range(1, 7))
    assert [c["step"] for c in hooks.checkpoints] == [3, 6]
    assert [r["stage"] for r in hooks.reports] == ["baseline", "final"]
    assert result.evaluation["split"]["source"] == "held_out"
    info = json.loads((plan.output_dir / TRAINING_INFO_FILE).read_text())
    assert info["world_size"] == 2
    model, tokenizer = load_for_inference(model_dir=tiny_bert, adapter_dir=plan.output_dir,
                                          task="sequence_classification")
    again = reference_outputs(model, tokenizer, task="sequence_classification", inputs=result.reference["inputs"])
    assert torch.allclose(torch.tensor(again["logits"]), torch.tensor(result.reference["logits"]), atol=1e-4)


def test_stop_reaches_every_rank(tmp_path, tiny_bert):
    train_file = write_classification_jsonl(tmp_path / "t.jsonl", 32)
    hooks = RecordingHooks(stop_at=1)  # the parent's first poll already says stop
    result = train(ddp_plan(tmp_path, tiny_bert, train_file, save_steps=100), hooks)
    assert result.stopped
    assert result.steps < 8
    assert not (tmp_path / "out").exists()
    # Every rank stopped at the same step and the stop checkpoint was written there.
    assert len({r["steps"] for r in result.data["ranks"]}) == 1
    assert [c["step"] for c in hooks.checkpoints] == [result.steps]
