"""The saved artifact: the method's weights, the tokenizer and ``hubtune_training.json``, and loading it back.

``save_artifact`` and ``load_for_inference`` share this format, so they live together. Published model
cards import ``load_for_inference`` from ``worker.engine.trainer``, which re-exports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.engine.data import SEQUENCE_CLASSIFICATION, Examples
from worker.engine.loading import load_base_model, load_tokenizer, quiet
from worker.engine.methods import get_method
from worker.engine.plan import TrainPlan

TRAINING_INFO_FILE = "hubtune_training.json"


def load_for_inference(*, model_dir: Path, adapter_dir: Path, task: str):
    """(model, tokenizer) of a saved artifact: the base model with the adapter loaded by peft."""

    quiet()
    adapter_dir = Path(adapter_dir)
    info_path = adapter_dir / TRAINING_INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    tokenizer_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else Path(model_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    base, _ = load_base_model(Path(model_dir), task=task, labels=info.get("labels"), tokenizer=tokenizer)
    method = get_method(info.get("tuning", {}).get("type", "lora"))
    model = method.load(base, adapter_dir)
    model.eval()
    return model, tokenizer


def save_artifact(plan: TrainPlan, model, tokenizer, examples: Examples, metrics: dict, *,
                   evaluation: dict | None = None, world_size: int = 1) -> None:
    out = Path(plan.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    get_method(plan.tuning.type).save(model, out)
    if plan.task == SEQUENCE_CLASSIFICATION:
        _save_label_config(model, out)
    tokenizer.save_pretrained(str(out))  # with the chat template the job rendered its conversations with
    info: dict[str, Any] = {
        "task": plan.task,
        "format": examples.format,
        "base_model_dir": Path(plan.model_dir).name,
        "tuning": plan.tuning.model_dump(mode="json"),
        "training": plan.training.model_dump(mode="json"),
        "hyperparameters": plan.hyperparameters,
        "seed": plan.seed,
        "metrics": metrics,
        "evaluation": evaluation,
        "world_size": world_size,
    }
    if plan.task == SEQUENCE_CLASSIFICATION:
        info["labels"] = examples.labels
        info["id2label"] = {str(i): label for i, label in enumerate(examples.labels)}
    (out / TRAINING_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def _save_label_config(model, out: Path) -> None:
    """config.json beside an adapter: the base model's config with the job's num_labels, id2label and
    label2id. peft builds the base from the base repo's own config (2 labels by default) and takes a
    head size only from its caller, so ``AutoConfig.from_pretrained(repo)`` is where a user (and the
    model card's snippet) finds them. A full fine-tune's own config.json already carries them."""
    if (out / "config.json").is_file():
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.save_pretrained(str(out))
