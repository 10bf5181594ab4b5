"""DPO in the engine (worker/engine/dpo.py) on a tiny llama built from a config: trl's DPOTrainer with the
adapter switched off as the reference (LoRA) or a frozen copy (full); the rewards reach the hooks as
train_/valid_ metrics; the tuned model prefers the preferred replies of held-out pairs more often than
the base model; the artifact loads back."""

from __future__ import annotations

import json

import pytest

from hubtune.spec import Training, Tuning
from testkit.tiny_models import make_tiny_llama, write_jsonl, write_preference_jsonl
from worker.engine.methods import MethodError
from worker.engine.plan import TrainPlan
from worker.engine.trainer import train

REWARD_KEYS = {"rewards_chosen", "rewards_rejected", "rewards_margin", "preference_accuracy"}


class RecordingHooks:
    def __init__(self, stop_at: int | None = None):
        self.metrics, self.evaluations, self.checkpoints, self.started = [], [], [], None
        self.stop_at, self.polls = stop_at, 0

    def on_start(self, **kwargs):
        self.started = kwargs

    def on_metrics(self, metrics):
        self.metrics.append(metrics)

    def on_checkpoint(self, **kwargs):
        self.checkpoints.append(kwargs)

    def should_stop(self):
        self.polls += 1
        return self.stop_at is not None and self.polls >= self.stop_at

    def losses(self):
        return [m["train_loss"] for m in self.metrics if "train_loss" in m]

    def on_evaluation(self, *, stage, message, data):
        self.evaluations.append((stage, message, data))


@pytest.mark.parametrize("tuning, rate", [("lora", 5e-3), ("full", 1e-3)])
def test_dpo_makes_the_tiny_model_prefer_the_preferred_replies(tmp_path, tuning, rate):
    model_dir = make_tiny_llama(tmp_path / "llama")
    data = write_preference_jsonl(tmp_path / "pairs.jsonl", 48, seed=1)
    plan = TrainPlan.in_folder(
        tmp_path / "run", task="causal_lm", model_dir=model_dir, train_file=data, method="dpo", seed=2,
        tuning=Tuning(type=tuning), training=Training(max_seq_length=64, validation_split=0.25),
        hyperparameters={"n_epochs": 3, "batch_size": 8, "learning_rate": rate, "learning_rate_multiplier": 1.0,
                         "beta": 0.1})
    hooks = RecordingHooks()
    result = train(plan, hooks)

    assert not result.stopped and result.steps == hooks.started["total_steps"] == 15  # 36 pairs / 8, 3 epochs
    stages = [stage for stage, _, _ in hooks.evaluations]
    assert stages == ["baseline", "final"]
    evaluation = result.evaluation
    assert evaluation["primary_metric"] == "preference_accuracy" and evaluation["split"]["source"] == "held_out"
    # 12 held-out pairs are too few for a stable figure, and the note says which figure.
    assert evaluation["split"]["reliable"] is False
    assert "stable preference_accuracy" in evaluation["split"]["unreliable_reason"]
    base, tuned = evaluation["base"]["preference_accuracy"], evaluation["tuned"]["preference_accuracy"]
    print(f"{tuning}: held-out preference accuracy {base:.3f} -> {tuned:.3f}")
    assert tuned > base and evaluation["beat_baseline"] is True
    assert evaluation["tuned"]["logprob_margin"] > evaluation["base"]["logprob_margin"]
    # trl's rewards ride on the logged steps: every training step, and the evaluations.
    trained = [m for m in hooks.metrics if "train_loss" in m]
    assert trained and all({f"train_{k}" for k in REWARD_KEYS} <= set(m) for m in trained)
    evaluated = [m for m in hooks.metrics if "valid_loss" in m]
    assert evaluated and {f"valid_{k}" for k in REWARD_KEYS} <= set(evaluated[-1])
    assert evaluated[-1]["valid_rewards_margin"] > 0
    assert result.metrics["valid_preference_accuracy"] == evaluated[-1]["valid_preference_accuracy"]
    info = json.loads((plan.output_dir / "hubtune_training.json").read_text())
    assert info["format"] == "preference" and info["evaluation"]["tuned"]["preference_accuracy"] == tuned
    if tuning == "lora":
        # The reference is the adapter switched off: no second ("ref") adapter was kept or saved.
        assert result.data["reference"] == "base model (adapter off)"
        config = json.loads((plan.output_dir / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and not (plan.output_dir / "ref").exists()
    else:
        assert result.data["reference"] == "frozen copy of the base model"
        assert (plan.output_dir / "model.safetensors").is_file()


def test_a_paused_dpo_run_resumes_from_its_checkpoint_on_the_same_curve(tmp_path):
    model_dir = make_tiny_llama(tmp_path / "llama")
    data = write_preference_jsonl(tmp_path / "pairs.jsonl", 24, seed=3)

    def run(name, *, stop_at=None, resume_from=None):
        plan = TrainPlan.in_folder(
            tmp_path / name, task="causal_lm", model_dir=model_dir, train_file=data, method="dpo", seed=2,
            tuning=Tuning(type="lora"), training=Training(max_seq_length=64, validation_split=0.0, save_steps=4),
            hyperparameters={"n_epochs": 1, "batch_size": 4, "learning_rate": 5e-3, "learning_rate_multiplier": 1.0,
                             "beta": 0.1}, resume_from=resume_from)
        hooks = RecordingHooks(stop_at=stop_at)
        return plan, hooks, train(plan, hooks)

    _, whole, _ = run("whole")
    plan, paused, stopped = run("paused", stop_at=2)
    assert stopped.stopped and stopped.steps == 2 and not plan.output_dir.exists()
    assert [c["step"] for c in paused.checkpoints] == [2]
    plan, resumed, result = run("resumed", resume_from=paused.checkpoints[-1]["path"])
    assert not result.stopped and result.steps == 6
    assert [m["step"] for m in resumed.metrics if "train_loss" in m] == [3, 4, 5, 6]
    assert paused.losses() + resumed.losses() == pytest.approx(whole.losses(), abs=1e-5)
    assert (plan.output_dir / "adapter_model.safetensors").is_file()


def test_dpo_after_sft_continues_the_parent_adapter_with_it_as_the_reference(tmp_path):
    """A continued job (issue 18 §2, plan.init_adapter): the SFT adapter trains further with DPO; trl's
    frozen copy of that adapter is the reference, and only the trained adapter is saved."""
    model_dir = make_tiny_llama(tmp_path / "llama")
    chats = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": f"which colour is {c}"}, {"role": "assistant", "content": f"{c} {c}"}]}
        for c in ["red", "blue", "green", "yellow"] * 6])
    sft = TrainPlan.in_folder(tmp_path / "sft", task="causal_lm", model_dir=model_dir, train_file=chats, seed=2,
                              tuning=Tuning(type="lora", dropout=0.0),
                              training=Training(learning_rate=1e-2, validation_split=0.0), n_epochs=2, batch_size=8)
    parent = train(sft, RecordingHooks())
    data = write_preference_jsonl(tmp_path / "pairs.jsonl", 48, seed=1)
    plan = TrainPlan.in_folder(
        tmp_path / "dpo", task="causal_lm", model_dir=model_dir, train_file=data, method="dpo", seed=2,
        tuning=Tuning(type="lora", dropout=0.0), training=Training(max_seq_length=64, validation_split=0.25),
        hyperparameters={"n_epochs": 2, "batch_size": 8, "learning_rate": 5e-3, "learning_rate_multiplier": 1.0,
                         "beta": 0.1}, init_adapter=sft.output_dir)
    hooks = RecordingHooks()
    result = train(plan, hooks)
    assert result.data["reference"] == "the starting adapter (a frozen copy)"
    assert result.trainable_params == parent.trainable_params
    baseline = next(message for stage, message, _ in hooks.evaluations if stage == "baseline")
    assert "model it continues from" in baseline
    # DPO's first step starts at the reference (loss log 2 = 0.693): the reference is the parent adapter.
    assert abs(hooks.losses()[0] - 0.6931) < 0.01
    config = json.loads((plan.output_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and not (plan.output_dir / "ref").exists()
    assert result.evaluation["tuned"]["preference_accuracy"] >= result.evaluation["base"]["preference_accuracy"]


def test_a_tuning_type_dpo_cannot_train_fails_naming_it(tmp_path):
    plan = TrainPlan.in_folder(tmp_path, task="causal_lm", model_dir=tmp_path, train_file=tmp_path / "none.jsonl",
                               method="dpo", tuning=Tuning(type="adapter"))
    with pytest.raises(MethodError) as info:
        train(plan, RecordingHooks())
    assert info.value.param == "tuning.type" and "lora, qlora, full" in info.value.message
