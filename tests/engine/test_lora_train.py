"""LoRA training end to end on tiny random models (and a few steps on the real MiniLM)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
import torch

from hubtune.spec import Hyperparameters, Training, Tuning
from tests.engine.conftest import RecordingHooks
from testkit.tiny_models import (
    CHAT_ANSWER,
    classification_rows,
    write_chat_jsonl,
    write_classification_jsonl,
    write_completion_jsonl,
    write_jsonl,
)
from worker.engine.data import DataError, load_examples
from worker.engine.datasets import IGNORE_INDEX, build_dataset
from worker.engine.hparams import resolve_hyperparameters
from worker.engine.trainer import (
    TRAINING_INFO_FILE,
    TrainPlan,
    load_base_model,
    load_for_inference,
    load_tokenizer,
    reference_outputs,
    train,
)

TIMINGS: dict[str, float] = {}


def resolved_plan(
    tmp: Path, model_dir: Path, train_file: Path, *, task: str, valid_file: Path | None = None, seed: int = 1,
    n_epochs: int = 2, batch_size: int = 8, training: Training | None = None, tuning: Tuning | None = None,
    resume_from: Path | None = None,
) -> TrainPlan:
    training = training or Training(learning_rate=1e-2, logging_steps=1)
    n = len(load_examples(train_file, task=task, param="training_file").rows)
    hp = resolve_hyperparameters(
        n_examples=n, task=task, tuning_type="lora",
        requested=Hyperparameters(n_epochs=n_epochs, batch_size=batch_size), training=training,
    )
    return TrainPlan.in_folder(
        tmp, task=task, model_dir=model_dir, train_file=train_file, valid_file=valid_file, seed=seed,
        tuning=tuning or Tuning(dropout=0.0), training=training, hyperparameters=hp, resume_from=resume_from,
    )


def timed(name, fn, *args):
    start = time.monotonic()
    result = fn(*args)
    TIMINGS[name] = round(time.monotonic() - start, 2)
    return result


def mean(xs):
    return statistics.fmean(xs)


# ---------------------------------------------------------------------------------------------
# Tiny BERT classification


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory, tiny_bert):
    tmp = tmp_path_factory.mktemp("bert-run")
    train_file = write_classification_jsonl(tmp / "train.jsonl", 64, seed=0)
    valid_file = write_classification_jsonl(tmp / "valid.jsonl", 16, seed=1)
    plan = resolved_plan(
        tmp, tiny_bert, train_file, task="sequence_classification", valid_file=valid_file, n_epochs=6,
        training=Training(learning_rate=1e-2, logging_steps=1, save_steps=16),
    )
    hooks = RecordingHooks()
    result = timed("tiny_bert_48_steps", train, plan, hooks)
    return plan, hooks, result


def test_classification_loss_falls(bert_run):
    plan, hooks, result = bert_run
    losses = hooks.train_losses
    assert len(losses) == 48 == result.steps
    first, last = mean(losses[:4]), mean(losses[-4:])
    print(f"tiny BERT loss {first:.3f} -> {last:.3f}; valid {hooks.evaluations}")
    assert last < 0.6 * first
    assert result.metrics["valid_accuracy"] >= 0.8
    assert result.metrics["valid_loss"] < hooks.evaluations[0]["valid_loss"]
    assert result.metrics["train_loss"] == losses[-1]
    assert not result.stopped
    assert hooks.started == {
        "total_steps": 48, "trainable_params": result.trainable_params, "total_params": result.total_params,
    }
    assert 0 < result.trainable_params < result.total_params / 20


def test_metrics_events(bert_run):
    _, hooks, result = bert_run
    train_events = [m for m in hooks.metrics if "train_loss" in m]
    assert [m["step"] for m in train_events] == list(range(1, 49))
    for m in train_events:
        assert {"step", "total_steps", "train_loss", "learning_rate", "epoch", "trained_tokens"} <= set(m)
        assert m["total_steps"] == 48
    tokens = [m["trained_tokens"] for m in train_events]
    assert tokens == sorted(tokens) and tokens[0] > 0 and tokens[-1] == result.trained_tokens
    # Six epochs of the training set's tokens (padding not counted).
    assert result.trained_tokens == 6 * result.data["train_tokens"]
    assert train_events[-1]["epoch"] == pytest.approx(6.0)
    assert train_events[0]["learning_rate"] > train_events[-1]["learning_rate"]  # linear decay
    evals = hooks.evaluations
    assert [m["step"] for m in evals] == [16, 32, 48]
    assert all("valid_accuracy" in m for m in evals)


def test_checkpoints_reported(bert_run):
    plan, hooks, _ = bert_run
    assert [c["step"] for c in hooks.checkpoints] == [16, 32, 48]
    for c in hooks.checkpoints:
        assert c["path"] == plan.checkpoints_dir / f"checkpoint-{c['step']}"
        assert (c["path"] / "adapter_model.safetensors").is_file()
        assert "valid_loss" in c["metrics"] and "train_loss" in c["metrics"]


def test_artifact_reloads_with_same_outputs(bert_run, tiny_bert):
    from peft import PeftModel

    plan, _, result = bert_run
    out = plan.output_dir
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", TRAINING_INFO_FILE):
        assert (out / name).is_file(), name
    info = json.loads((out / TRAINING_INFO_FILE).read_text())
    assert info["task"] == "sequence_classification"
    assert info["labels"] == ["negative", "positive"]
    assert info["id2label"] == {"0": "negative", "1": "positive"}
    assert info["tuning"]["r"] == 8 and info["hyperparameters"] == plan.hyperparameters
    assert info["base_model_dir"] == tiny_bert.name

    ref = result.reference
    assert len(ref["inputs"]) == 4 and len(ref["logits"][0]) == 2
    # The probes come from the validation file; the trained model gets them right.
    valid_rows = [json.loads(line) for line in plan.valid_file.read_text().splitlines()[:4]]
    assert ref["inputs"] == [r["text"] for r in valid_rows]
    predicted = [info["labels"][int(torch.tensor(lg).argmax())] for lg in ref["logits"]]
    assert sum(p == r["label"] for p, r in zip(predicted, valid_rows)) >= 3

    # Plain peft on a fresh base model reproduces the trained model's logits.
    base, _ = load_base_model(tiny_bert, task="sequence_classification", labels=info["labels"])
    model = PeftModel.from_pretrained(base, str(out))
    tokenizer = load_tokenizer(out)
    again = reference_outputs(model, tokenizer, task="sequence_classification", inputs=ref["inputs"])
    assert torch.allclose(torch.tensor(again["logits"]), torch.tensor(ref["logits"]), atol=1e-4)
    # So does load_for_inference.
    model, tokenizer = load_for_inference(model_dir=tiny_bert, adapter_dir=out, task="sequence_classification")
    again = reference_outputs(model, tokenizer, task="sequence_classification", inputs=ref["inputs"])
    assert torch.allclose(torch.tensor(again["logits"]), torch.tensor(ref["logits"]), atol=1e-4)
    # And the base model alone (fresh random head) does not.
    base, _ = load_base_model(tiny_bert, task="sequence_classification", labels=info["labels"])
    plain = reference_outputs(base, tokenizer, task="sequence_classification", inputs=ref["inputs"])
    assert not torch.allclose(torch.tensor(plain["logits"]), torch.tensor(ref["logits"]), atol=1e-2)


# ---------------------------------------------------------------------------------------------
# Stop, resume, determinism (8 steps each)


@pytest.fixture(scope="module")
def quick(tmp_path_factory, tiny_bert):
    tmp = tmp_path_factory.mktemp("quick")
    train_file = write_classification_jsonl(tmp / "train.jsonl", 32, seed=2)

    def run(name: str, *, seed: int = 3, stop_at: int | None = None, resume_from: Path | None = None,
            dropout: float = 0.1):
        plan = resolved_plan(
            tmp / name, tiny_bert, train_file, task="sequence_classification", seed=seed, n_epochs=2,
            tuning=Tuning(dropout=dropout), resume_from=resume_from,
            training=Training(learning_rate=1e-2, logging_steps=1, save_steps=4),
        )
        hooks = RecordingHooks(stop_at=stop_at)
        return plan, hooks, timed(f"tiny_bert_8_steps[{name}]", train, plan, hooks)

    return run


@pytest.fixture(scope="module")
def reference_curve(quick):
    return quick("a")


def test_same_seed_same_loss_curve(quick, reference_curve):
    _, hooks_a, result_a = reference_curve
    _, hooks_b, result_b = quick("b")
    assert len(hooks_a.train_losses) == 6  # the held-out split grows to 4 per label: 24 rows train
    assert hooks_a.train_losses == hooks_b.train_losses  # exactly, dropout included
    assert result_a.reference == result_b.reference
    _, hooks_c, _ = quick("c", seed=4)
    assert hooks_c.train_losses != hooks_a.train_losses


def test_should_stop_after_step_2(quick):
    plan, hooks, result = quick("stop", stop_at=2)
    assert result.stopped and result.steps == 2
    assert hooks.polls == 2
    assert [m["step"] for m in hooks.metrics] == [1, 2]
    # A checkpoint is taken at the stop step so that a paused job resumes from there.
    assert [c["step"] for c in hooks.checkpoints] == [2]
    assert (hooks.checkpoints[0]["path"] / "adapter_model.safetensors").is_file()
    assert result.reference == {}
    assert not plan.output_dir.exists()


def test_resume_continues_the_same_curve(quick, reference_curve):
    _, hooks_a, result_a = reference_curve
    _, stop_hooks, _ = quick("pause", stop_at=3)
    checkpoint = stop_hooks.checkpoints[-1]["path"]
    assert checkpoint.name == "checkpoint-3"
    plan, hooks, result = quick("resume", resume_from=checkpoint)
    assert not result.stopped and result.steps == 6
    assert [m["step"] for m in hooks.metrics if "train_loss" in m] == [4, 5, 6]
    assert stop_hooks.train_losses + hooks.train_losses == pytest.approx(hooks_a.train_losses, abs=1e-6)
    assert (plan.output_dir / "adapter_model.safetensors").is_file()


def test_max_steps_epoch_checkpoints_and_warmup(tmp_path, tiny_bert):
    train_file = write_classification_jsonl(tmp_path / "train.jsonl", 32)  # 24 train after the held-out 8: 3 steps per epoch
    plan = resolved_plan(
        tmp_path, tiny_bert, train_file, task="sequence_classification", n_epochs=3,
        training=Training(learning_rate=1e-2, max_steps=5, logging_steps=2, warmup_ratio=0.4),
    )
    hooks = RecordingHooks()
    result = train(plan, hooks)
    assert hooks.started["total_steps"] == 5 and result.steps == 5
    # Logged every 2 steps, and the last step always; a checkpoint per epoch and at the end.
    assert [m["step"] for m in hooks.metrics if "train_loss" in m] == [2, 4, 5]
    assert [c["step"] for c in hooks.checkpoints] == [3, 5]
    assert result.metrics["train_loss"] == hooks.train_losses[-1]
    # Linear warmup over 2 of the 5 steps (0, 0.005, 0.01), then linear decay; the logged rate is
    # the one the step used.
    assert [m["learning_rate"] for m in hooks.metrics if "train_loss" in m] == pytest.approx([0.005, 0.01 * 2 / 3, 0.01 / 3])


# ---------------------------------------------------------------------------------------------
# Data problems surface before any training


def test_bad_validation_file_is_a_data_error(tmp_path, tiny_bert):
    train_file = write_classification_jsonl(tmp_path / "train.jsonl", 16)
    valid_file = write_jsonl(tmp_path / "valid.jsonl", classification_rows(4) + [{"text": "meh", "label": "neutral"}])
    plan = resolved_plan(tmp_path, tiny_bert, train_file, task="sequence_classification", valid_file=valid_file)
    hooks = RecordingHooks()
    with pytest.raises(DataError) as info:
        train(plan, hooks)
    assert (info.value.code, info.value.param, info.value.line) == ("invalid_label", "validation_file", 5)
    assert hooks.started is None
    plan.task = "causal_lm"
    with pytest.raises(DataError) as info:
        train(plan, hooks)
    assert info.value.code == "invalid_task"


# ---------------------------------------------------------------------------------------------
# Tiny llama: chat and prompt/completion


def test_chat_labels_only_assistant_tokens(tmp_path, llama_tokenizer):
    path = write_chat_jsonl(tmp_path / "chat.jsonl", 4)
    ds = build_dataset(load_examples(path, task="causal_lm", param="training_file"), tokenizer=llama_tokenizer,
                       max_seq_length=64)
    for feature in ds.features:
        trained = [t for t in feature["labels"] if t != IGNORE_INDEX]
        assert llama_tokenizer.decode(trained) == f"{CHAT_ANSWER} [SEP]"
        assert len(trained) < len(feature["input_ids"]) / 3


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("chat-run")
    train_file = write_chat_jsonl(tmp / "chat.jsonl", 32)
    valid_file = write_chat_jsonl(tmp / "chat-valid.jsonl", 8, seed=5)
    plan = resolved_plan(
        tmp, tiny_llama, train_file, task="causal_lm", valid_file=valid_file, n_epochs=4,
        training=Training(learning_rate=3e-2, logging_steps=2, max_seq_length=64),
    )
    hooks = RecordingHooks()
    return plan, hooks, timed("tiny_llama_chat_16_steps", train, plan, hooks)


def test_chat_loss_falls_and_answer_is_learned(chat_run, llama_tokenizer):
    plan, hooks, result = chat_run
    losses = hooks.train_losses
    assert len(losses) == 8 and result.steps == 16  # logged every 2 steps
    print(f"tiny llama chat loss {losses[0]:.3f} -> {losses[-1]:.3f}; {hooks.evaluations}")
    assert losses[-1] < 0.5 * losses[0]
    assert result.metrics["valid_loss"] < hooks.evaluations[0]["valid_loss"] or len(hooks.evaluations) == 1
    assert result.metrics["valid_loss"] < 0.5 * losses[0]
    assert "valid_accuracy" not in result.metrics
    # Every probe now predicts the answer's first word after the assistant marker.
    first_word = llama_tokenizer.convert_tokens_to_ids(CHAT_ANSWER.split()[0])
    assert [ids[0] for ids in result.reference["token_ids"]] == [first_word] * 4
    assert all(p.endswith("<|assistant|>\n") for p in result.reference["inputs"])


def test_chat_adapter_reloads(chat_run, tiny_llama):
    plan, _, result = chat_run
    model, tokenizer = load_for_inference(model_dir=tiny_llama, adapter_dir=plan.output_dir, task="causal_lm")
    again = reference_outputs(model, tokenizer, task="causal_lm", inputs=result.reference["inputs"],
                              max_length=plan.training.max_seq_length)
    assert again["token_ids"] == result.reference["token_ids"]
    assert torch.allclose(torch.tensor(again["logits"]), torch.tensor(result.reference["logits"]), atol=1e-4)
    assert (plan.output_dir / "chat_template.jinja").is_file() or tokenizer.chat_template


def test_completion_loss_falls(tmp_path, tiny_llama, llama_tokenizer):
    train_file = write_completion_jsonl(tmp_path / "completion.jsonl", 32)
    plan = resolved_plan(
        tmp_path, tiny_llama, train_file, task="causal_lm", n_epochs=4,
        training=Training(learning_rate=3e-2, logging_steps=1, max_seq_length=32),
    )
    hooks = RecordingHooks()
    result = timed("tiny_llama_completion_16_steps", train, plan, hooks)
    losses = hooks.train_losses
    print(f"tiny llama completion loss {mean(losses[:2]):.3f} -> {mean(losses[-2:]):.3f}")
    assert len(losses) == 16
    assert mean(losses[-2:]) < 0.5 * mean(losses[:2])
    # Only completion tokens (+ eos) are trained: 3 per example ("red red" + eos) x 32 x 4 epochs
    # of loss-bearing tokens; every token (prompt included) is fed.
    assert result.trained_tokens == 4 * result.data["train_tokens"]
    assert result.reference["inputs"][0].startswith("colour ")


# ---------------------------------------------------------------------------------------------
# The real all-MiniLM-L6-v2


def test_real_minilm_few_steps(tmp_path, minilm):
    import torch.nn.functional as F
    from transformers import set_seed

    train_file = write_classification_jsonl(tmp_path / "train.jsonl", 48, seed=7)
    plan = resolved_plan(
        tmp_path, minilm, train_file, task="sequence_classification", n_epochs=3,
        training=Training(learning_rate=3e-3, logging_steps=1, max_seq_length=32),
        tuning=Tuning(r=4, alpha=8, dropout=0.0),
    )
    hooks = RecordingHooks()
    result = timed("minilm_18_steps", train, plan, hooks)
    assert result.steps == 15 and len(hooks.train_losses) == 15  # 48 rows, 12 held out
    assert result.total_params > 22_000_000

    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    texts = [r["text"] for r in rows]
    labels = ["negative", "positive"]
    target = torch.tensor([labels.index(r["label"]) for r in rows])

    def loss_and_accuracy(model, tokenizer):
        logits = torch.tensor(
            reference_outputs(model, tokenizer, task="sequence_classification", inputs=texts, max_length=32)["logits"]
        )
        return F.cross_entropy(logits, target).item(), (logits.argmax(-1) == target).float().mean().item()

    # The untrained starting point: the same seed gives the same new head, and LoRA starts at zero.
    set_seed(plan.seed)
    base, _ = load_base_model(minilm, task="sequence_classification", labels=labels)
    before = loss_and_accuracy(base, load_tokenizer(minilm))
    model, tokenizer = load_for_inference(model_dir=minilm, adapter_dir=plan.output_dir, task="sequence_classification")
    after = loss_and_accuracy(model, tokenizer)
    print(f"MiniLM training-set loss/accuracy {before} -> {after}")
    assert after[0] < 0.75 * before[0]
    assert after[1] >= 0.9
    again = reference_outputs(model, tokenizer, task="sequence_classification", inputs=result.reference["inputs"],
                              max_length=32)
    assert torch.allclose(torch.tensor(again["logits"]), torch.tensor(result.reference["logits"]), atol=1e-4)


def test_every_checkpoint_holds_the_tokenizer_serialised_once(tmp_path, tiny_bert, monkeypatch):
    import worker.engine.hf_trainer as trainer_module  # EngineTrainer._save calls it

    serialised = []
    real = trainer_module.serialised_files
    monkeypatch.setattr(trainer_module, "serialised_files", lambda tok: serialised.append(real(tok)) or serialised[-1])
    train_file = write_classification_jsonl(tmp_path / "train.jsonl", 32)  # 24 train after the held-out 8: 3 steps per epoch
    plan = resolved_plan(tmp_path, tiny_bert, train_file, task="sequence_classification", n_epochs=3,
                     training=Training(learning_rate=1e-2, max_steps=9))
    hooks = RecordingHooks()
    train(plan, hooks)
    assert [c["step"] for c in hooks.checkpoints] == [3, 6, 9]
    assert len(serialised) == 1  # once per run, not once per checkpoint
    files = serialised[0]
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(files)
    base = load_tokenizer(tiny_bert)
    for c in hooks.checkpoints:
        for name, data in files.items():
            assert (c["path"] / name).read_bytes() == data, f"{c['path'].name}/{name} differs"
        assert load_tokenizer(c["path"])("a checkpoint")["input_ids"] == base("a checkpoint")["input_ids"]


@pytest.fixture(scope="module", autouse=True)
def _print_timings():
    """The seconds each timed run took, printed once the module's tests ran, in whatever order they ran
    (pytest -s shows it): a report, not a test."""
    yield
    print("timings (s):", json.dumps(TIMINGS))
