"""Resolving "auto" hyperparameters from the data set size and the tuning method."""

from __future__ import annotations

import math

from hubtune.spec import Hyperparameters, Training

# Base learning rates per tuning method, before learning_rate_multiplier: the usual starting points
# (LoRA/QLoRA 2e-4 as in the QLoRA paper; bottleneck adapters 1e-3 as in Houlsby et al.; every weight
# 2e-5, the BERT fine-tuning range). Any other peft method starts from OTHER_PEFT_LEARNING_RATE.
BASE_LEARNING_RATES = {"lora": 2e-4, "qlora": 2e-4, "adapter": 1e-3, "full": 2e-5}
OTHER_PEFT_LEARNING_RATE = 2e-4

DEFAULT_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100  # tiny sets get more epochs, so that about this many examples are seen
MAX_TARGET_EXAMPLES = 25_000  # big sets get fewer epochs, so that about this many are seen
MAX_AUTO_EPOCHS = 25
MAX_AUTO_BATCH_SIZE = 16


def auto_epochs(n_examples: int) -> int:
    n = max(1, n_examples)
    if n * DEFAULT_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n))
    if n * DEFAULT_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // n)
    return DEFAULT_EPOCHS


def auto_batch_size(n_examples: int) -> int:
    size = min(MAX_AUTO_BATCH_SIZE, max(1, n_examples // 8))
    return 1 << (size.bit_length() - 1)  # round down to a power of two


def resolve_hyperparameters(
    *, n_examples: int, task: str, tuning_type: str, requested: Hyperparameters, training: Training
) -> dict:
    """Turn the request's hyperparameters (each a value or "auto") into the numbers training uses.

    Rules, applied to each field left "auto" (explicit values are kept as given):

    - ``n_epochs``: 3; when 3 epochs would show fewer than 100 examples, ceil(100 / n_examples)
      (at most 25); when they would show more than 25,000, max(1, 25,000 // n_examples).
      E.g. 10 examples -> 10 epochs, 40 -> 3, 20,000 -> 1.
    - ``batch_size``: n_examples // 8, clamped to [1, 16] and rounded down to a power of two.
      E.g. 7 examples -> 1, 40 -> 4, 100 -> 8, 1,000 -> 16.
    - ``learning_rate_multiplier``: 1.0.
    - ``learning_rate`` (always derived): (``training.learning_rate`` if set, else the method's base
      rate: lora/qlora 2e-4, adapter 1e-3, full 2e-5, any other peft method 2e-4)
      x ``learning_rate_multiplier``.
    - ``learning_rate_search`` (always derived): True when both ``learning_rate_multiplier`` is "auto"
      and ``training.learning_rate`` is unset: training then searches around ``learning_rate`` first
      (worker.engine.lr_search); an explicit value of either skips the search.

    ``n_examples`` is what trains: prepare passes the training file's size less the held-out split.
    ``task`` is accepted so that rules may differ per task; they do not at present. Whether a tuning
    type exists is the method registry's question (worker.engine.methods), not this one's.
    Raises ValueError for a task that is not known, or n_examples < 1.
    """
    if task not in ("sequence_classification", "causal_lm"):
        raise ValueError(f"unknown task {task!r}")
    if n_examples < 1:
        raise ValueError("n_examples must be at least 1")

    n_epochs = auto_epochs(n_examples) if requested.n_epochs == "auto" else int(requested.n_epochs)
    batch_size = auto_batch_size(n_examples) if requested.batch_size == "auto" else int(requested.batch_size)
    multiplier = 1.0 if requested.learning_rate_multiplier == "auto" else float(requested.learning_rate_multiplier)
    method_rate = BASE_LEARNING_RATES.get(tuning_type, OTHER_PEFT_LEARNING_RATE)
    base = training.learning_rate if training.learning_rate is not None else method_rate
    return {
        "n_epochs": n_epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": multiplier,
        "learning_rate": base * multiplier,
        "learning_rate_search": requested.learning_rate_multiplier == "auto" and training.learning_rate is None,
    }
