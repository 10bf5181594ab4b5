"""Resolving "auto" hyperparameters from the data set size and the tuning method."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hubtune.estimator import EstimateError, architecture
from hubtune.spec import Hyperparameters, Training

# Base learning rates per tuning method, before learning_rate_multiplier: the usual starting points
# (LoRA/QLoRA 2e-4 as in the QLoRA paper; bottleneck adapters 1e-3 as in Houlsby et al.; every weight
# 2e-5, the BERT fine-tuning range). Any other peft method starts from OTHER_PEFT_LEARNING_RATE.
# Causal LMs of 1B parameters or more keep these (not measured here: no such model runs on this machine).
BASE_LEARNING_RATES = {"lora": 2e-4, "qlora": 2e-4, "adapter": 1e-3, "full": 2e-5}
OTHER_PEFT_LEARNING_RATE = 2e-4
# A sequence classifier's LoRA must move a classification head that starts from random weights: 2e-4 is
# far too low. Measured with the plain transformers+peft script on all-MiniLM-L6-v2, macro-F1 on held-out
# test sets (BENCHMARKS.md, "Quality with the defaults"): binary_imbalanced (1,000 rows, 8 % positive,
# 189 steps) 1e-3 -> 0.846, 3e-3 -> 0.479 (collapsed to the majority class); small (75 rows, 100 steps)
# 1e-3 -> 0.933, 3e-3 -> 0.877; multiclass_imbalanced (500 rows, 96 steps) 1e-3 -> 0.765, 3e-3 -> 0.834;
# an earlier user's 4-class set: 2e-4 -> 0.12, 1e-3 -> 0.48, 3e-3 -> 0.84, and 1,000 SMS 1e-3 -> 0.94.
# 1e-3 is best or close on most sets and never collapsed; 3e-3 did. adapter and full were not measured.
CLASSIFICATION_LEARNING_RATES = {"lora": 1e-3, "qlora": 1e-3}
# A small causal LM's LoRA learns faster than the QLoRA paper's 2e-4 (set for 7B-65B models). Plain
# transformers+peft script on SmolLM2-135M-Instruct, 3 epochs, batch 8, held-out assistant-token loss
# (BENCHMARKS.md §6): chat 1e-4 -> 2.279, 3e-4 -> 2.100, 1e-3 -> 2.020, 3e-3 -> 2.156. Larger models
# want lower LoRA rates (the QLoRA paper: 2e-4 up to 13B, 1e-4 beyond), so the higher rate applies below
# SMALL_CAUSAL_PARAMS only, where it was measured; bigger models keep BASE_LEARNING_RATES.
SMALL_CAUSAL_LEARNING_RATES = {"lora": 1e-3, "qlora": 1e-3}
SMALL_CAUSAL_PARAMS = 1_000_000_000

DEFAULT_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100  # tiny sets get more epochs, so that about this many examples are seen
MAX_TARGET_EXAMPLES = 25_000  # big sets get fewer epochs, so that about this many are seen
MAX_AUTO_EPOCHS = 25
MAX_AUTO_BATCH_SIZE = 16
# A classifier needs optimizer steps, not examples seen: "small" (68 training rows, batch 8, 9 steps an
# epoch) at 3 epochs (27 steps) reached macro-F1 0.41 where the plain script's 100 steps reached 0.93.
# So auto epochs rise until an auto run makes at least this many steps (still at most MAX_AUTO_EPOCHS).
# 200, not 100 (bench/quality.py at 1e-3, BENCHMARKS.md §6): multiclass_imbalanced 116 -> 232 steps
# 0.772 -> 0.856, binary_imbalanced 171 -> 228 steps 0.856 -> 0.885, small (3 seeds) 105 -> 210 steps
# 0.925 -> 0.925 on average; small sets train about twice as long (small: 16 s -> 40 s on 2 CPU cores).
MIN_CLASSIFICATION_STEPS = 200


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


def min_steps_epochs(n_examples: int, batch_size: int, epochs: int) -> int:
    steps_per_epoch = math.ceil(max(1, n_examples) / batch_size)
    return max(epochs, min(MAX_AUTO_EPOCHS, math.ceil(MIN_CLASSIFICATION_STEPS / steps_per_epoch)))


def base_learning_rate(task: str, tuning_type: str, *, n_params: int | None = None) -> float:
    if task == "sequence_classification" and tuning_type in CLASSIFICATION_LEARNING_RATES:
        return CLASSIFICATION_LEARNING_RATES[tuning_type]
    if (task == "causal_lm" and tuning_type in SMALL_CAUSAL_LEARNING_RATES and n_params is not None
            and n_params < SMALL_CAUSAL_PARAMS):
        return SMALL_CAUSAL_LEARNING_RATES[tuning_type]
    return BASE_LEARNING_RATES.get(tuning_type, OTHER_PEFT_LEARNING_RATE)


def model_parameters(model_dir: str | Path, *, task: str) -> int | None:
    """The base model's parameter count from its config.json (hubtune.estimator's architecture table);
    None when the config is missing or of an architecture the estimator does not know."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        return architecture(config, task=task).total
    except (OSError, ValueError, KeyError, EstimateError):
        return None


def resolve_hyperparameters(
    *, n_examples: int, task: str, tuning_type: str, requested: Hyperparameters, training: Training,
    n_params: int | None = None,
) -> dict:
    """Turn the request's hyperparameters (each a value or "auto") into the numbers training uses.

    Rules, applied to each field left "auto" (explicit values are kept as given):

    - ``n_epochs``: 3; when 3 epochs would show fewer than 100 examples, ceil(100 / n_examples)
      (at most 25); when they would show more than 25,000, max(1, 25,000 // n_examples).
      E.g. 10 examples -> 10 epochs, 40 -> 3, 20,000 -> 1.
      sequence_classification then raises it until the run makes at least 200 optimizer steps
      (ceil(200 / ceil(n_examples / batch_size)) epochs, at most 25): 68 examples at batch 8 -> 23.
    - ``batch_size``: n_examples // 8, clamped to [1, 16] and rounded down to a power of two.
      E.g. 7 examples -> 1, 40 -> 4, 100 -> 8, 1,000 -> 16.
    - ``learning_rate_multiplier``: 1.0.
    - ``learning_rate`` (always derived): (``training.learning_rate`` if set, else the base rate of
      the task and method: sequence_classification with lora/qlora 1e-3; causal_lm with lora/qlora on a
      model of fewer than 1B parameters (``n_params``, from model_parameters) 1e-3; otherwise lora/qlora 2e-4,
      adapter 1e-3, full 2e-5, any other peft method 2e-4) x ``learning_rate_multiplier``.
    - ``learning_rate_search`` (always derived): True when both ``learning_rate_multiplier`` is "auto"
      and ``training.learning_rate`` is unset: training then searches around ``learning_rate`` first
      (worker.engine.lr_search); an explicit value of either skips the search.

    ``n_examples`` is what trains: prepare passes the training file's size less the held-out split.
    ``task`` selects the classification rules above. Whether a tuning
    type exists is the method registry's question (worker.engine.methods), not this one's.
    Raises ValueError for a task that is not known, or n_examples < 1.
    """
    if task not in ("sequence_classification", "causal_lm"):
        raise ValueError(f"unknown task {task!r}")
    if n_examples < 1:
        raise ValueError("n_examples must be at least 1")

    batch_size = auto_batch_size(n_examples) if requested.batch_size == "auto" else int(requested.batch_size)
    if requested.n_epochs != "auto":
        n_epochs = int(requested.n_epochs)
    elif task == "sequence_classification":
        n_epochs = min_steps_epochs(n_examples, batch_size, auto_epochs(n_examples))
    else:
        n_epochs = auto_epochs(n_examples)
    multiplier = 1.0 if requested.learning_rate_multiplier == "auto" else float(requested.learning_rate_multiplier)
    method_rate = base_learning_rate(task, tuning_type, n_params=n_params)
    base = training.learning_rate if training.learning_rate is not None else method_rate
    return {
        "n_epochs": n_epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": multiplier,
        "learning_rate": base * multiplier,
        "learning_rate_search": requested.learning_rate_multiplier == "auto" and training.learning_rate is None,
    }


# DPO moves a model away from its reference by small steps: a tenth of the supervised rate (trl's
# examples use 5e-7..5e-6 in full and ~5e-5 with LoRA on larger models).
DPO_RATE_FACTOR = 0.1
DPO_DEFAULT_BETA = 0.1


def resolve_dpo_hyperparameters(resolved: dict, requested, training: Training) -> dict:
    """The supervised resolution of ``requested`` (a spec.DpoHyperparameters) adjusted for DPO: the
    method's base rate scaled by DPO_RATE_FACTOR (then by the multiplier) unless ``training.learning_rate``
    names the rate, ``beta`` ("auto": 0.1), and no learning-rate search (it searches on the supervised
    validation loss, which DPO does not optimise)."""
    out = dict(resolved)
    if training.learning_rate is None:
        out["learning_rate"] = out["learning_rate"] * DPO_RATE_FACTOR
    out["learning_rate_search"] = False
    beta = getattr(requested, "beta", "auto")
    out["beta"] = DPO_DEFAULT_BETA if beta == "auto" else float(beta)
    return out
