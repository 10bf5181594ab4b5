"""A continued job trains its parent's adapter further (issue 18 §2): loaded trainable from the parent's
artifact or from one of its checkpoint folders, on the same base, it starts where the parent ended."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hubtune.spec import Training, Tuning
from tests.engine.conftest import RecordingHooks
from testkit.tiny_models import write_chat_jsonl
from worker.engine.trainer import TrainPlan, train

TRAINING = Training(learning_rate=1e-2, logging_steps=1, save_steps=4, validation_split=0.0)


def _plan(root, tiny_llama, data, tuning, *, n_epochs, init_adapter=None) -> TrainPlan:
    return TrainPlan.in_folder(root, task="causal_lm", model_dir=tiny_llama, train_file=data, tuning=tuning,
                               training=TRAINING, n_epochs=n_epochs, batch_size=8, init_adapter=init_adapter)


def _first_loss(hooks: RecordingHooks) -> float:
    return next(m["train_loss"] for m in hooks.metrics if m.get("train_loss") is not None)


@pytest.fixture(scope="module", params=["lora", "adapter"])
def parent(request, tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp(f"parent-{request.param}")
    data = write_chat_jsonl(root / "chat.jsonl", 24, seed=0)
    tuning = Tuning(type=request.param, dropout=0.0)
    hooks = RecordingHooks()
    result = train(_plan(root, tiny_llama, data, tuning, n_epochs=4), hooks)
    assert not result.stopped
    return {"root": root, "data": data, "tuning": tuning, "hooks": hooks, "result": result}


def _weights(folder) -> dict[str, torch.Tensor]:
    return {k: v for path in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(path)).items()}


@pytest.mark.parametrize("start", ["artifact", "checkpoint"])
def test_the_child_starts_where_the_parent_ended(parent, tmp_path, tiny_llama, start):
    folder = parent["root"] / "out" if start == "artifact" else max(
        (parent["root"] / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    hooks = RecordingHooks()
    result = train(_plan(tmp_path, tiny_llama, parent["data"], parent["tuning"], n_epochs=1, init_adapter=folder),
                   hooks)
    assert not result.stopped
    parent_first = _first_loss(parent["hooks"])
    parent_last = parent["hooks"].metrics[-1]["train_loss"]
    # The parent's first step saw a fresh adapter, the child's first step the trained one (the last
    # checkpoint is the final step): it starts at the parent's last loss, not at its first.
    gained = parent_first - parent_last
    assert gained > 1.0
    assert abs(_first_loss(hooks) - parent_last) < 0.2 * gained, (_first_loss(hooks), parent_first, parent_last)
    # The same adapter trained further: as many trainable weights, and they moved.
    assert result.trainable_params == parent["result"].trainable_params
    before, after = _weights(parent["root"] / "out"), _weights(tmp_path / "out")
    assert set(before) == set(after)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    if parent["tuning"].type == "lora":
        assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["peft_type"] == "LORA"


def test_a_fresh_adapter_does_not_start_there(parent, tmp_path, tiny_llama):
    """The control for the test above: without init_adapter the first loss is the untrained one."""
    hooks = RecordingHooks()
    train(_plan(tmp_path, tiny_llama, parent["data"], parent["tuning"], n_epochs=1), hooks)
    assert _first_loss(hooks) == pytest.approx(_first_loss(parent["hooks"]), rel=0.05)
