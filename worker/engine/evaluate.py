"""Evaluation: the split it runs on, the metrics of a model on it, baselines, and the goal check.

Every job is evaluated on its validation file, or else on a held-out split of the training file
(``training.validation_split`` of it, seeded by the job's seed; stratified by label for
classification so that every class keeps training examples), grown to at least 5 per label and 20
in all where that takes at most 25 % of a label and of the file (worker.engine.holdout has the exact
rule). A split under 20 examples or 5 of some label is marked ``reliable: False`` with a reason,
and the messages and the model card say so next to the metric. When nothing can be held out
(``validation_split`` 0, or too few examples) the training file itself is evaluated (source
``"training_file"``) so that the base/tuned comparison still exists.

The evaluation record (``job.result["evaluation"]``; keys are stable, the model card renders them)::

    {"split": {"source": "validation_file" | "held_out" | "training_file", "examples": int,
               "fraction": float | None, "reliable": bool, "unreliable_reason": str | None},
     "primary_metric": "macro_f1" | "valid_loss",
     "base": {metric: value}, "tuned": {metric: value},
     "base_kind": "linear_probe" | "base_model",
     "majority_baseline": {metric: value} | None,
     "beat_baseline": bool,
     "goal": {"metric", "min", "max", "value", "met"} | None,
     "samples": [{"prompt", "reference", "base", "tuned"}]}

Classification metrics: accuracy, macro_f1, recall_per_class ({label: recall}), valid_loss (plain
cross-entropy, whatever the class weights). causal_lm: valid_loss (mean over trained tokens) and
perplexity = exp(valid_loss).

``base`` is what fine-tuning must beat, named by ``base_kind``: for classification a linear probe on
the frozen base model's embeddings, fitted on the training split (worker.engine.probe; a fresh
random head would measure its seed, not the base model); for causal_lm the base model itself before
any optimizer step (a LoRA starts at zero). ``beat_baseline``: the tuned model is better than
``base`` and (classification) than the majority class on the primary metric. ``samples``
(causal_lm; [] otherwise): greedy completions of the base and the tuned model on a few evaluation
prompts (worker.engine.completions).
"""

from __future__ import annotations

import math

import torch

from worker.engine.data import CAUSAL_LM, SEQUENCE_CLASSIFICATION, Examples
from worker.engine.datasets import IGNORE_INDEX
from worker.engine.holdout import RULE, RULE_CAUSAL_LM, held_out_indices, reliability
from worker.engine.metrics import classification_metrics, majority_label
from worker.engine.options import GOAL_METRICS, OptionError, check_goal  # noqa: F401 (re-exported)

PRIMARY_METRIC = {SEQUENCE_CLASSIFICATION: "macro_f1", CAUSAL_LM: "valid_loss"}
# What the "base" column holds for each task (see the module docstring).
BASE_KIND = {SEQUENCE_CLASSIFICATION: "linear_probe", CAUSAL_LM: "base_model"}
BASELINE_NAMES = {"linear_probe": "linear probe on the base model's embeddings", "base_model": "base model"}
SPLIT_KEYS = ("source", "examples", "fraction", "reliable", "unreliable_reason")  # what the evaluation record keeps
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "valid_loss": False, "perplexity": False}


def _subset(examples: Examples, indices: list[int]) -> Examples:
    return Examples(
        task=examples.task, format=examples.format, rows=[examples.rows[i] for i in indices],
        labels=list(examples.labels), lines=[examples.lines[i] for i in indices] if examples.lines else [],
    )


def split_for_evaluation(
    train: Examples, valid: Examples | None, *, fraction: float, seed: int
) -> tuple[Examples, Examples, dict]:
    """(examples to train on, examples to evaluate on, the split record with the held-out lines and
    whether the split is reliable: worker.engine.holdout)."""
    primary = PRIMARY_METRIC[train.task]
    if valid is not None:
        split = {"source": "validation_file", "examples": len(valid), "fraction": None}
        return train, valid, {**split, **reliability(valid, source="validation_file", primary_metric=primary)}
    chosen = held_out_indices(train, fraction=fraction, seed=seed)
    if not chosen:
        split = {"source": "training_file", "examples": len(train), "fraction": None}
        return train, train, {**split, **reliability(train, source="training_file", primary_metric=primary)}
    keep = sorted(set(range(len(train))) - set(chosen))
    held = _subset(train, chosen)
    split = {"source": "held_out", "examples": len(chosen), "fraction": fraction,
             "rule": RULE if train.task == SEQUENCE_CLASSIFICATION else RULE_CAUSAL_LM,
             **reliability(held, source="held_out", primary_metric=primary), "lines": held.lines}
    return _subset(train, keep), held, split


@torch.no_grad()
def evaluate_model(model, dataset, *, collator, task: str, labels: list[str], batch_size: int) -> dict:
    """The metrics of ``model`` (put in eval mode, restored afterwards) on an encoded dataset."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, loss_count = 0.0, 0
    predictions: list[int] = []
    targets: list[int] = []
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            target = batch.pop("labels")
            logits = model(**batch).logits.float()
            if task == SEQUENCE_CLASSIFICATION:
                loss_sum += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
                loss_count += target.numel()
                predictions += logits.argmax(-1).tolist()
                targets += target.tolist()
            else:
                shifted = target[:, 1:]
                loss_sum += torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]), shifted.reshape(-1),
                    ignore_index=IGNORE_INDEX, reduction="sum",
                ).item()
                loss_count += int((shifted != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    valid_loss = loss_sum / max(loss_count, 1)
    if task == SEQUENCE_CLASSIFICATION:
        metrics = classification_metrics(predictions=predictions, targets=targets, labels=labels)
        metrics["valid_loss"] = valid_loss
        return metrics
    return {"valid_loss": valid_loss, "perplexity": math.exp(min(valid_loss, 700.0))}


def majority_baseline(*, train_label_ids: list[int], eval_label_ids: list[int], labels: list[str]) -> dict:
    """Metrics of always answering the training set's most frequent label."""
    guess = majority_label(train_label_ids)
    return classification_metrics(predictions=[guess] * len(eval_label_ids), targets=eval_label_ids, labels=labels)


def _better(metric: str, a: float, b: float) -> bool:
    return a > b if HIGHER_IS_BETTER[metric] else a < b


def goal_result(goal, tuned: dict) -> dict | None:
    if goal is None:
        return None
    value = tuned[goal.metric]
    met = (goal.min is None or value >= goal.min) and (goal.max is None or value <= goal.max)
    return {"metric": goal.metric, "min": goal.min, "max": goal.max, "value": value, "met": bool(met)}


def evaluation_record(*, task: str, split: dict, base: dict, tuned: dict, majority: dict | None, goal,
                      samples: list[dict] | None = None) -> dict:
    primary = PRIMARY_METRIC[task]
    beat = _better(primary, tuned[primary], base[primary])
    if majority is not None:
        beat = beat and _better(primary, tuned[primary], majority[primary])
    return {
        "split": {k: split[k] for k in SPLIT_KEYS if k in split},
        "primary_metric": primary,
        "base": base,
        "tuned": tuned,
        "base_kind": BASE_KIND[task],
        "majority_baseline": majority,
        "beat_baseline": bool(beat),
        "goal": goal_result(goal, tuned),
        "samples": list(samples or []),
    }


def summary(metrics: dict) -> str:
    """'macro_f1 0.812, accuracy 0.900, valid_loss 0.311' for event messages."""
    keys = [k for k in ("macro_f1", "accuracy", "valid_loss", "perplexity") if k in metrics]
    return ", ".join(f"{k} {metrics[k]:.4g}" for k in keys)


MAX_RECORDED_LINES = 1000


def split_record(train: Examples, valid: Examples | None, *, fraction: float, seed: int) -> dict:
    """The split a job will be evaluated on, for events and the data report: source, examples,
    fraction and (held out) the first MAX_RECORDED_LINES training-file lines held out."""
    _, _, split = split_for_evaluation(train, valid, fraction=fraction, seed=seed)
    return compact_split(split)


def compact_split(split: dict) -> dict:
    out = {k: split[k] for k in (*SPLIT_KEYS, "rule") if k in split}
    if "lines" in split:
        out["lines"] = split["lines"][:MAX_RECORDED_LINES]
        out["lines_truncated"] = len(split["lines"]) > MAX_RECORDED_LINES
    return out
