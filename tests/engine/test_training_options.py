"""Every training field reaches the Trainer: schedule, warmup, accumulation, intervals, precision,
checkpointing, early stopping and packing."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hubtune.spec import Training, Tuning
from tests.engine.conftest import RecordingHooks
from testkit.tiny_models import classification_rows, write_classification_jsonl, write_completion_jsonl, write_jsonl
from worker.engine.data import load_examples
from worker.engine.datasets import IGNORE_INDEX, PadCollator, build_dataset
from worker.engine.packing import PackingCollator, pack_rows
from worker.engine.hf_trainer import resolve_bf16, training_arguments
from worker.engine.trainer import TrainPlan, load_base_model, train


def plan_for(tmp, model_dir, train_file, *, task="sequence_classification", training, n_epochs=2, batch_size=8,
             valid_file=None):
    return TrainPlan.in_folder(tmp, task=task, model_dir=model_dir, train_file=train_file, valid_file=valid_file,
                               seed=2, tuning=Tuning(dropout=0.0), training=training, n_epochs=n_epochs,
                               batch_size=batch_size)


def test_fields_map_ontotraining_arguments(tmp_path):
    training = Training(
        learning_rate=1e-3, lr_scheduler="cosine", warmup_steps=3, weight_decay=0.01, gradient_accumulation_steps=4,
        eval_steps=5, save_steps=10, logging_steps=2, max_steps=40, gradient_checkpointing=True, bf16=False,
    )
    args = training_arguments(plan_for(tmp_path, tmp_path, tmp_path / "t.jsonl", training=training), has_eval=True)
    assert args.lr_scheduler_type.value == "cosine" and args.warmup_steps == 3
    assert args.weight_decay == 0.01 and args.gradient_accumulation_steps == 4 and args.max_steps == 40
    assert (args.eval_strategy.value, args.eval_steps) == ("steps", 5)
    assert args.save_steps == 10 and args.logging_steps == 2
    assert args.activation_checkpointing and not args.bf16
    # Ratio warmup, once-per-epoch intervals and no evaluation without an evaluation set.
    args = training_arguments(
        plan_for(tmp_path, tmp_path, tmp_path / "t.jsonl", training=Training(warmup_ratio=0.1)), has_eval=False)
    assert args.warmup_steps == pytest.approx(0.1)
    assert args.save_strategy.value == "epoch" and args.eval_strategy.value == "no"


def test_bf16_auto_only_on_a_cuda_gpu_that_has_it():
    expected = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert resolve_bf16("auto") is expected
    assert resolve_bf16(False) is False and resolve_bf16(True) is True


def test_cosine_schedule_accumulation_and_checkpointing_train(tmp_path, tiny_bert):
    train_file = write_classification_jsonl(tmp_path / "t.jsonl", 32)
    training = Training(learning_rate=1e-2, lr_scheduler="cosine", gradient_accumulation_steps=2,
                        gradient_checkpointing=True, weight_decay=0.1, validation_split=0.0, save_steps=100)
    hooks = RecordingHooks()
    result = train(plan_for(tmp_path, tiny_bert, train_file, training=training, n_epochs=2, batch_size=4), hooks)
    # 32 examples / batch 4 = 8 micro-batches an epoch, 2 per optimizer step: 4 steps x 2 epochs.
    assert result.steps == 8 and hooks.started["total_steps"] == 8
    rates = [m["learning_rate"] for m in hooks.metrics if "train_loss" in m]
    assert rates == pytest.approx([1e-2 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)])
    assert all(math.isfinite(loss) for loss in hooks.train_losses)


def test_early_stopping_when_valid_loss_stops_improving(tmp_path, tiny_bert):
    train_file = write_classification_jsonl(tmp_path / "t.jsonl", 32, seed=1)
    # The validation labels are the opposite of what training teaches: its loss can only rise.
    flipped = [{"text": r["text"], "label": "negative" if r["label"] == "positive" else "positive"}
               for r in classification_rows(16, seed=2)]
    valid_file = write_jsonl(tmp_path / "v.jsonl", flipped)
    training = Training(learning_rate=2e-2, eval_steps=2, save_steps=100, early_stopping_patience=2)
    hooks = RecordingHooks()
    result = train(plan_for(tmp_path, tiny_bert, train_file, training=training, n_epochs=10, valid_file=valid_file),
                   hooks)
    losses = [m["valid_loss"] for m in hooks.evaluations]
    print("early stopping valid losses:", losses, "stopped at", result.data["early_stopped_at"])
    assert hooks.started["total_steps"] == 40 and result.steps < 40
    assert result.data["early_stopped_at"] == result.steps and not result.stopped
    best = losses.index(min(losses))
    assert len(losses) - 1 - best == 2  # exactly `patience` evaluations without improvement, then stop
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()  # a finished job, not a stopped one


# ---------------------------------------------------------------------------------------------
# Packing


@pytest.mark.parametrize("row_length", [1024, 32], ids=["one row", "several rows"])
def test_packing_keeps_examples_apart_and_the_same_loss(tmp_path, tiny_llama, llama_tokenizer, row_length):
    examples = load_examples(write_completion_jsonl(tmp_path / "c.jsonl", 6), task="causal_lm", param="training_file")
    features = build_dataset(examples, tokenizer=llama_tokenizer, max_seq_length=32).features
    features[0] = dict(features[0], input_ids=features[0]["input_ids"] + [5, 6, 7, 8],
                       attention_mask=[1] * (len(features[0]["input_ids"]) + 4),
                       labels=features[0]["labels"] + [IGNORE_INDEX] * 4)  # lengths differ: padding
    model, _ = load_base_model(tiny_llama, task="causal_lm")
    model.eval()
    model.config.use_cache = False  # as the Trainer sets it: transformers reads packing only without a cache
    padded = PadCollator(llama_tokenizer.pad_token_id)(features)
    packed = PackingCollator(max_length=row_length, pad_id=llama_tokenizer.pad_token_id)(features)
    lengths = [len(f["input_ids"]) for f in features]
    rows, width = packed["input_ids"].shape
    if row_length >= sum(lengths):
        assert (rows, width) == (1, sum(lengths))
    else:
        assert rows > 1 and width <= row_length  # rows of bounded length: attention costs no more than padded
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    assert "attention_mask" not in packed
    # Loss masking: exactly the tokens the padded batch trains (each example's first label is moot).
    trained_padded = int((padded["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert int((packed["labels"] != IGNORE_INDEX).sum()) == trained_padded
    with torch.no_grad():
        loss_padded = model(**padded).loss
        loss_packed = model(**packed).loss
        # No leakage: every example's logits in its row equal its logits alone.
        logits = model(**{k: v for k, v in packed.items() if k != "labels"}).logits
        for row, indices in enumerate(pack_rows(lengths, row_length)):
            start = 0
            for i in indices:
                alone = model(input_ids=torch.tensor([features[i]["input_ids"]])).logits[0]
                assert torch.allclose(alone, logits[row, start:start + lengths[i]], atol=1e-4)
                start += lengths[i]
    assert loss_packed.item() == pytest.approx(loss_padded.item(), rel=1e-4)


@pytest.mark.parametrize("lengths, capacity, rows", [
    ([5, 3, 2], 10, [[0, 1, 2]]),  # everything fits one row
    ([6, 6, 4, 4], 10, [[0, 2], [1, 3]]),  # first fit, longest first
    ([12, 3], 10, [[0], [1]]),  # longer than a row: a row of its own
    ([1, 9, 2, 8], 10, [[1, 0], [3, 2]]),
])
def test_pack_rows_first_fit_by_decreasing_length(lengths, capacity, rows):
    assert pack_rows(lengths, capacity) == rows


def test_packed_training_feeds_fewer_positions(tmp_path, tiny_llama):
    # Prompts of 0 to 7 extra words: a padded batch pads to its longest; a packed one does not pad.
    colors = ["red", "blue", "green", "black"]
    rows = [{"prompt": "please " * (i % 8) + f"colour {colors[i % 4]} means", "completion": f" {colors[i % 4]}"}
            for i in range(32)]
    train_file = write_jsonl(tmp_path / "c.jsonl", rows)
    results = {}
    for packing in (False, True):
        training = Training(learning_rate=3e-2, max_seq_length=32, packing=packing, validation_split=0.0,
                            save_steps=100)
        hooks = RecordingHooks()
        results[packing] = (train(plan_for(tmp_path / str(packing), tiny_llama, train_file, task="causal_lm",
                                           training=training, n_epochs=3), hooks), hooks)
    (plain, plain_hooks), (packed, packed_hooks) = results[False], results[True]
    print("positions fed: padded", plain.data["fed_positions"], "packed", packed.data["fed_positions"])
    # Rows of up to max_seq_length tokens, padded only to the fullest row.
    assert 3 * packed.data["train_tokens"] <= packed.data["fed_positions"] < plain.data["fed_positions"]
    assert packed.steps == plain.steps
    assert packed_hooks.train_losses[0] == pytest.approx(plain_hooks.train_losses[0], rel=1e-4)
    assert packed.evaluation["tuned"]["valid_loss"] < 0.7 * packed.evaluation["base"]["valid_loss"]
