"""transformers' Trainer as the engine runs it: the Trainer subclass, its arguments, and its metric functions."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from worker.engine.plan import TrainPlan


def resolve_bf16(setting) -> bool:
    """``training.bf16``: "auto" means bf16 only on a CUDA GPU that supports it."""
    if setting == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(setting)


def world_size() -> int:
    """Processes in this run (torch.distributed.run sets WORLD_SIZE in each rank)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def training_arguments(plan: TrainPlan, *, has_eval: bool, args_class=None, **overrides):
    """Every ``training`` field, mapped onto TrainingArguments (intervals in optimizer steps).
    ``args_class`` (a TrainingArguments subclass such as trl's DPOConfig) and ``overrides`` are for
    trainers that need more settings than these."""
    hp, training = plan.hyperparameters, plan.training
    save_strategy = "steps" if training.save_steps else "epoch"
    eval_every = training.eval_steps or training.save_steps
    eval_strategy = ("steps" if eval_every else "epoch") if has_eval else "no"
    # transformers reads a warmup_steps below 1 as a ratio of the total steps.
    warmup = training.warmup_steps if training.warmup_steps is not None else training.warmup_ratio
    extra: dict[str, Any] = {}
    if world_size() > 1 and not torch.cuda.is_available():
        extra.update(use_cpu=True, ddp_backend="gloo")  # accelerate runs multi-CPU DDP only when told "cpu"
    if training.gradient_checkpointing:
        extra["activation_checkpointing"] = True
        extra["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    kwargs = dict(
        output_dir=str(plan.checkpoints_dir),
        num_train_epochs=hp["n_epochs"],
        max_steps=training.max_steps or -1,
        per_device_train_batch_size=hp["batch_size"],
        per_device_eval_batch_size=hp["batch_size"],
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=hp["learning_rate"],
        weight_decay=training.weight_decay,
        warmup_steps=warmup,
        lr_scheduler_type=training.lr_scheduler,
        logging_strategy="steps",
        logging_steps=training.logging_steps,
        save_strategy=save_strategy,
        save_steps=training.save_steps or 500,
        eval_strategy=eval_strategy,
        eval_steps=eval_every if eval_strategy == "steps" else None,
        seed=plan.seed,
        data_seed=plan.seed,
        report_to="none",
        disable_tqdm=True,
        log_level="warning",
        remove_unused_columns=False,
        label_names=["labels"],
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        bf16=resolve_bf16(training.bf16),
        **extra,
    )
    kwargs.update(overrides)
    return (args_class or TrainingArguments)(**kwargs)


def accuracy(eval_pred) -> dict:
    predictions, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    return {"accuracy": float((predictions == labels).mean())}


def argmax_logits(logits, labels):
    """Keep only the predicted class of each row (the Trainer would otherwise gather all logits)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def serialised_files(tokenizer) -> dict[str, bytes]:
    """What ``tokenizer.save_pretrained`` writes, by file name."""
    with tempfile.TemporaryDirectory(prefix="tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


class EngineTrainer(Trainer):
    """Trainer with the engine's sampler choice and a count of the token positions it feeds."""

    train_sampler_factory = None
    fed_positions = 0
    eval_seconds = 0.0  # evaluations run inside train() (eval_steps, epochs), timed apart from the steps
    _tokenizer_files: dict[str, bytes] | None = None

    def evaluate(self, *args, **kwargs):
        started = time.monotonic()
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.eval_seconds += time.monotonic() - started

    def _get_train_sampler(self, train_dataset=None):
        if self.train_sampler_factory is not None:
            return self.train_sampler_factory()
        return super()._get_train_sampler(train_dataset)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.fed_positions += int(inputs["input_ids"].numel())
        return super().training_step(model, inputs, num_items_in_batch)

    def _save(self, output_dir=None, state_dict=None):
        # Every checkpoint keeps its tokenizer, but the tokenizer never changes during a run: it is
        # serialised once and its bytes written again (tokenizer.json took 0.1 s a checkpoint for
        # MiniLM, inside the training phase; an LLM vocabulary is ten times larger).
        tokenizer, self.processing_class = self.processing_class, None
        try:
            super()._save(output_dir, state_dict)
        finally:
            self.processing_class = tokenizer
        if tokenizer is not None and self.args.should_save:
            if self._tokenizer_files is None:
                self._tokenizer_files = serialised_files(tokenizer)
            target = Path(output_dir if output_dir is not None else self.args.output_dir)
            for name, data in self._tokenizer_files.items():
                (target / name).write_bytes(data)
