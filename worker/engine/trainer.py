"""Training: transformers' Trainer + a tuning method (peft), reporting through hooks.

``train(plan, hooks)`` is the one entry point the Celery task calls; it knows nothing about jobs,
the database or the hub. ``load_for_inference`` and ``reference_outputs`` load a saved artifact back
and compute the probe outputs, so that a saved adapter can be checked against the trained model.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from hubtune.spec import Training, Tuning
from worker.engine.data import (
    CAUSAL_LM,
    SEQUENCE_CLASSIFICATION,
    DataError,
    Examples,
    check_validation,
    load_examples,
)
from worker.engine.completions import SampleRun
from worker.engine.datasets import PadCollator, build_dataset, encode_causal_text, probe_input
from worker.engine.evaluate import (
    BASE_KIND,
    BASELINE_NAMES,
    PRIMARY_METRIC,
    compact_split,
    evaluate_model,
    evaluation_record,
    majority_baseline,
    split_for_evaluation,
    summary,
)
from worker.engine.lr_search import learning_rate_search
from worker.engine.methods import get_method
from worker.engine.packing import PackingCollator
from worker.engine.probe import linear_probe
from worker.engine.options import check_training_options
from worker.engine.sampling import WeightedClassSampler, class_weights, weighted_cross_entropy
from worker.engine.verdict import reliability_note

TRAINING_INFO_FILE = "hubtune_training.json"
N_PROBES = 4
TOP_K = 5


@dataclass
class TrainPlan:
    task: str  # "sequence_classification" | "causal_lm"
    model_dir: Path  # local folder with the base model (config, safetensors, tokenizer)
    train_file: Path
    valid_file: Path | None
    output_dir: Path  # final artifact goes here
    checkpoints_dir: Path
    seed: int
    tuning: Tuning
    training: Training
    hyperparameters: dict  # from resolve_hyperparameters
    resume_from: Path | None = None
    # When should_stop() ends training, save a checkpoint at that step first (a paused job resumes
    # from exactly there; a cancelled one simply ignores it).
    checkpoint_on_stop: bool = True
    # Only for base-model repos that the server's HUBTUNE_TRUST_REMOTE_CODE_REPOS names.
    trust_remote_code: bool = False
    # Overrides of the learning-rate search's factors, min_rung_steps, budget_fraction (tests, benches).
    search_options: dict = field(default_factory=dict)


class Hooks(Protocol):
    """What the caller hears while training runs (all calls come from the training thread).

    - ``on_start``: once, before the first step (``total_steps`` is the planned optimizer steps).
    - ``on_metrics``: after each logging step ``{step, total_steps, epoch, trained_tokens, train_loss,
      learning_rate, grad_norm}``; a step that is also evaluated (per checkpoint, when there is a
      validation file) comes once, with ``valid_loss[, valid_accuracy]`` added to its train metrics.
      ``trained_tokens`` counts the non-padding tokens fed so far (prompts included).
    - ``on_checkpoint``: after a checkpoint folder is written (every ``training.save_steps`` steps,
      else every epoch; also at the step where should_stop() ended training), with the latest
      ``train_loss``/``valid_loss``/``valid_accuracy``.
    - ``should_stop``: polled after every optimizer step; True ends training after that step.
    - ``on_evaluation`` (optional; hooks without it are not told): ``stage="baseline"`` before the
      first step with ``data={split, primary_metric, base, base_kind, majority_baseline, probe}``
      (``probe``: the linear probe's {examples, iterations}, classification only), and ``stage="final"``
      after training with the evaluation record (worker.engine.evaluate); ``message`` is a sentence.
    """

    def on_start(self, *, total_steps: int, trainable_params: int, total_params: int) -> None: ...

    def on_metrics(self, metrics: dict) -> None: ...

    def on_checkpoint(self, *, step: int, path: Path, metrics: dict) -> None: ...

    def should_stop(self) -> bool: ...


@dataclass
class TrainResult:
    stopped: bool  # True when should_stop() ended it early
    steps: int
    trained_tokens: int
    metrics: dict  # final train_loss, valid_loss (if any), valid_accuracy for classification
    reference: dict  # probe outputs of the trained in-memory model ({} when stopped)
    trainable_params: int
    total_params: int
    data: dict = field(default_factory=dict)  # examples/tokens/skipped counts, split, world_size, ...
    evaluation: dict | None = None  # base vs tuned on the evaluation split (see worker.engine.evaluate)
    search: dict | None = None  # the learning-rate search's record (worker.engine.lr_search)


class NullHooks:
    """Hooks that do nothing (handy for scripts and tests)."""

    def on_start(self, *, total_steps: int, trainable_params: int, total_params: int) -> None:
        pass

    def on_metrics(self, metrics: dict) -> None:
        pass

    def on_checkpoint(self, *, step: int, path: Path, metrics: dict) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def on_evaluation(self, *, stage: str, message: str, data: dict) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# Loading


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@contextlib.contextmanager
def _transformers_verbosity(level: int):
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity(level)
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def load_tokenizer(model_dir: Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        for candidate in (tokenizer.eos_token, tokenizer.unk_token):
            if candidate is not None:
                tokenizer.pad_token = candidate
                break
        else:
            raise ValueError("the tokenizer has no pad, eos or unk token to pad with")
    return tokenizer


def load_base_model(
    model_dir: Path, *, task: str, labels: list[str] | None = None, tokenizer=None, method_kwargs: dict | None = None,
    trust_remote_code: bool = False,
):
    """The base model from safetensors (remote code only for repos a server setting allows), float32, and the names of the modules the
    checkpoint lacked (a new task head): those must be trained in full and saved with the adapter."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    kwargs: dict[str, Any] = {
        "use_safetensors": True,
        "trust_remote_code": trust_remote_code,
        "dtype": torch.float32,
        "output_loading_info": True,
        **(method_kwargs or {}),  # the tuning method's (e.g. qlora's 4-bit quantization config)
    }
    if task == SEQUENCE_CLASSIFICATION and not labels:
        raise ValueError("sequence_classification needs the label names")
    if task not in (SEQUENCE_CLASSIFICATION, CAUSAL_LM):
        raise ValueError(f"unknown task {task!r}")
    # The "newly initialized" load report is expected (a new head) and handled below: keep it quiet.
    with _transformers_verbosity(hf_logging.ERROR):
        if task == SEQUENCE_CLASSIFICATION:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir),
                num_labels=len(labels),
                id2label={i: label for i, label in enumerate(labels)},
                label2id={label: i for i, label in enumerate(labels)},
                **kwargs,
            )
        else:
            model, info = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if tokenizer is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    new_modules = sorted({key.rsplit(".", 1)[0] for key in info.get("missing_keys", ()) if "." in key})
    return model, new_modules


def load_for_inference(*, model_dir: Path, adapter_dir: Path, task: str):
    """(model, tokenizer) of a saved artifact: the base model with the adapter loaded by peft."""

    _quiet()
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


# ---------------------------------------------------------------------------------------------
# Probes


@torch.no_grad()
def reference_outputs(model, tokenizer, *, task: str, inputs: list[str], max_length: int | None = None) -> dict:
    """Outputs of ``model`` (put in eval mode) on ``inputs``, one at a time (no padding).

    sequence_classification: ``{"task", "inputs", "logits": [[one per label], ...]}``.
    causal_lm: the last position's top-5 tokens: ``{"task", "inputs", "token_ids": [[5 ids]],
    "logits": [[5 values]]}``. Texts are cut to ``max_length`` tokens (the start for classification,
    the end for causal prompts, which keeps the position that predicts the answer).
    """
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, Any] = {"task": task, "inputs": list(inputs), "logits": []}
    if task == CAUSAL_LM:
        out["token_ids"] = []
    for text in inputs:
        if task == SEQUENCE_CLASSIFICATION:
            ids = tokenizer(text, truncation=max_length is not None, max_length=max_length)["input_ids"]
        else:
            ids = encode_causal_text(tokenizer, text)
            if max_length is not None:
                ids = ids[-max_length:]
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits.float()
        if task == SEQUENCE_CLASSIFICATION:
            out["logits"].append(logits[0].cpu().tolist())
        else:
            values, indices = logits[0, -1].topk(TOP_K)
            out["logits"].append(values.cpu().tolist())
            out["token_ids"].append(indices.cpu().tolist())
    return out


# ---------------------------------------------------------------------------------------------
# Training


def _count_params(model) -> tuple[int, int]:
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def _accuracy(eval_pred) -> dict:
    predictions, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    return {"accuracy": float((predictions == labels).mean())}


def _argmax_logits(logits, labels):
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def _flush_metrics(hooks) -> None:
    """Hooks that batch metrics (worker.hooks.JobHooks) write what they hold; others have nothing to do."""
    flush = getattr(hooks, "flush_metrics", None)
    if flush is not None:
        flush()


def _make_callback(hooks: Hooks, plan: TrainPlan, counts: dict, state_box: dict):
    from transformers import TrainerCallback

    class HooksCallback(TrainerCallback):
        """Forwards Trainer events to the hooks and polls should_stop() after every optimizer step.

        A step's training loss is held until the Trainer is done with that step, so that a step which
        is also evaluated reaches on_metrics once, with both losses (one event, as OpenAI's read).
        """

        def __init__(self) -> None:
            self.latest: dict[str, Any] = {}
            self.held: dict[str, Any] | None = None  # the last logged step's train metrics, not yet sent

        def _base(self, state) -> dict:
            return {
                "step": state.global_step,
                "total_steps": state.max_steps,
                "epoch": round(state.epoch or 0.0, 4),
                "trained_tokens": int(state.num_input_tokens_seen),
            }

        def _send_held(self) -> None:
            if self.held is not None:
                held, self.held = self.held, None
                hooks.on_metrics(held)

        def on_train_begin(self, args, state, control, **kwargs):
            hooks.on_start(
                total_steps=state.max_steps,
                trainable_params=counts["trainable"],
                total_params=counts["total"],
            )

        def on_step_begin(self, args, state, control, **kwargs):
            self._send_held()  # the previous step had no evaluation (it would have come before this)

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                self._send_held()
                metrics = self._base(state)
                metrics["train_loss"] = float(logs["loss"])
                if "learning_rate" in logs:
                    metrics["learning_rate"] = float(logs["learning_rate"])
                if "grad_norm" in logs and logs["grad_norm"] is not None:
                    metrics["grad_norm"] = float(logs["grad_norm"])
                self.latest.update(train_loss=metrics["train_loss"], train_loss_step=state.global_step)
                self.held = metrics  # an evaluation of this step (eval_steps, epoch end) may follow
            elif "eval_loss" in logs:
                if self.held is not None and self.held["step"] != state.global_step:
                    self._send_held()
                metrics = {**(self.held or {}), **self._base(state)}
                self.held = None
                metrics["valid_loss"] = float(logs["eval_loss"])
                if "eval_accuracy" in logs:
                    metrics["valid_accuracy"] = float(logs["eval_accuracy"])
                self.latest.update(
                    {k: v for k, v in metrics.items() if k.startswith("valid_")}, valid_step=state.global_step
                )
                hooks.on_metrics(metrics)

        def on_save(self, args, state, control, **kwargs):
            self._send_held()
            _flush_metrics(hooks)  # the steps before a checkpoint are written before its event
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            metrics = self._base(state)
            for key in ("train_loss", "valid_loss", "valid_accuracy"):
                if key in self.latest:
                    metrics[key] = self.latest[key]
            hooks.on_checkpoint(step=state.global_step, path=path, metrics=metrics)

        def on_train_end(self, args, state, control, **kwargs):
            self._send_held()
            _flush_metrics(hooks)  # nothing buffered is lost when training ends early (stop, early stopping)

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_log = True  # the last step always reports its loss
            elif hooks.should_stop():
                state_box["stopped"] = True
                control.should_training_stop = True
                control.should_log = True
                if plan.checkpoint_on_stop:
                    control.should_save = True

    return HooksCallback()


def resolve_bf16(setting) -> bool:
    """``training.bf16``: "auto" means bf16 only on a CUDA GPU that supports it."""
    if setting == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(setting)


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _training_arguments(plan: TrainPlan, *, has_eval: bool):
    """Every ``training`` field, mapped onto TrainingArguments (intervals in optimizer steps)."""
    from transformers import TrainingArguments

    hp, training = plan.hyperparameters, plan.training
    save_strategy = "steps" if training.save_steps else "epoch"
    eval_every = training.eval_steps or training.save_steps
    eval_strategy = ("steps" if eval_every else "epoch") if has_eval else "no"
    # transformers reads a warmup_steps below 1 as a ratio of the total steps.
    warmup = training.warmup_steps if training.warmup_steps is not None else training.warmup_ratio
    extra: dict[str, Any] = {}
    if _world_size() > 1 and not torch.cuda.is_available():
        extra.update(use_cpu=True, ddp_backend="gloo")  # accelerate runs multi-CPU DDP only when told "cpu"
    if training.gradient_checkpointing:
        extra["activation_checkpointing"] = True
        extra["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    return TrainingArguments(
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


def _early_stopping_callback(patience: int, box: dict):
    from transformers import TrainerCallback

    class EarlyStopping(TrainerCallback):
        """Stops once valid_loss has not improved for ``patience`` evaluations in a row."""

        def __init__(self) -> None:
            self.best: float | None = None
            self.bad = 0

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            loss = (metrics or {}).get("eval_loss")
            if loss is None:
                return
            if self.best is None or loss < self.best:
                self.best, self.bad = loss, 0
            else:
                self.bad += 1
                if self.bad >= patience:
                    box["early_stopped_at"] = state.global_step
                    control.should_training_stop = True

    return EarlyStopping()


def serialised_files(tokenizer) -> dict[str, bytes]:
    """What ``tokenizer.save_pretrained`` writes, by file name."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def _trainer_class():
    from transformers import Trainer

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

    return EngineTrainer


def _load_data(plan: TrainPlan) -> tuple[Examples, Examples | None]:
    train_examples = load_examples(plan.train_file, task=plan.task, param="training_file")
    valid_examples = None
    if plan.valid_file is not None:
        valid_examples = load_examples(plan.valid_file, task=plan.task, param="validation_file")
        check_validation(train_examples, valid_examples)
    check_training_options(plan.training, task=plan.task, labels=train_examples.labels)
    return train_examples, valid_examples


def _label_ids(dataset) -> list[int]:
    return [int(f["labels"]) for f in dataset.features]


def _report(hooks, *, stage: str, message: str, data: dict) -> None:
    on_evaluation = getattr(hooks, "on_evaluation", None)
    if on_evaluation is not None:
        on_evaluation(stage=stage, message=message, data=data)


def train(plan: TrainPlan, hooks: Hooks) -> TrainResult:
    """Fine-tune ``plan.model_dir`` on ``plan.train_file`` per the plan; see the module docstring.

    With ``training.n_gpus > 1`` (and not already inside a distributed launch) the run is handed to
    ``worker.engine.distributed``, which starts one process per device and relays rank 0's reports.

    Raises DataError for bad data, ValueError for a bad plan (unknown method, targets that match no
    layer, options that do not fit the task). On success (not stopped) ``plan.output_dir`` holds the
    adapter, the tokenizer and ``hubtune_training.json``.
    """
    if plan.training.n_gpus > 1 and _world_size() == 1:
        from worker.engine.distributed import train_distributed

        return train_distributed(plan, hooks)
    return _train_here(plan, hooks)


def _train_here(plan: TrainPlan, hooks: Hooks) -> TrainResult:
    from transformers import PrinterCallback, set_seed

    _quiet()
    started = time.monotonic()
    clock = _PhaseClock()
    file_examples, valid_examples = _load_data(plan)
    train_examples, eval_examples, split = split_for_evaluation(
        file_examples, valid_examples, fraction=plan.training.validation_split, seed=plan.seed
    )
    classification = plan.task == SEQUENCE_CLASSIFICATION
    labels = file_examples.labels if classification else []

    set_seed(plan.seed)
    tokenizer = load_tokenizer(plan.model_dir, trust_remote_code=plan.trust_remote_code)
    method_kwargs = get_method(plan.tuning.type).base_model_kwargs(plan.tuning)
    model, new_modules = load_base_model(
        plan.model_dir, task=plan.task, labels=labels, tokenizer=tokenizer, method_kwargs=method_kwargs,
        trust_remote_code=plan.trust_remote_code,
    )
    model = get_method(plan.tuning.type).build(model, plan.tuning, task=plan.task, modules_to_save=new_modules)
    trainable, total = _count_params(model)
    clock.mark("load_s")  # data files, tokenizer, base model and the tuning method

    max_len = plan.training.max_seq_length
    label2id = file_examples.label2id
    train_ds = build_dataset(train_examples, tokenizer=tokenizer, max_seq_length=max_len, label2id=label2id)
    if len(train_ds) == 0:
        raise DataError(
            f"no training example has a trained token left after truncation at max_seq_length={max_len}",
            code="invalid_file_format",
            param="training_file",
        )
    eval_ds = build_dataset(eval_examples, tokenizer=tokenizer, max_seq_length=max_len, label2id=label2id)
    if len(eval_ds) == 0:
        eval_ds = None

    clock.mark("tokenize_s")
    pad = PadCollator(tokenizer.pad_token_id)
    batch_size = plan.hyperparameters["batch_size"]
    base = majority = None
    samples = SampleRun()
    if eval_ds is not None:
        if classification:
            # A linear probe on the frozen base model's embeddings (a fresh random head scores its seed).
            base, probe = linear_probe(model, train_features=train_ds.features, eval_features=eval_ds.features,
                                       labels=labels, training=plan.training, collator=pad,
                                       batch_size=batch_size, seed=plan.seed)
            majority = majority_baseline(train_label_ids=_label_ids(train_ds), eval_label_ids=_label_ids(eval_ds),
                                         labels=labels)
        else:
            base, probe = evaluate_model(model, eval_ds, collator=pad, task=plan.task, labels=labels,
                                         batch_size=batch_size), None
        text = (f"Baseline on {len(eval_ds)} {split['source'].replace('_', ' ')} examples: "
                f"{BASELINE_NAMES[BASE_KIND[plan.task]]}: {summary(base)}")
        if majority is not None:
            text += f"; majority class: {summary(majority)}"
        _report(hooks, stage="baseline", message=text,
                data={"split": compact_split(split), "primary_metric": PRIMARY_METRIC[plan.task], "base": base,
                      "base_kind": BASE_KIND[plan.task], "majority_baseline": majority, "probe": probe})
    clock.mark("probe_s" if classification else "baseline_eval_s")
    if eval_ds is not None and not classification:
        samples.before(model, tokenizer, eval_examples, max_length=max_len)  # every method: before any step
        clock.mark("samples_s")
    weights = None
    if classification:
        weights = class_weights(plan.training.class_weights, labels=labels, label_ids=_label_ids(train_ds))
    collator = PackingCollator(max_length=max_len, pad_id=tokenizer.pad_token_id) if plan.training.packing else pad
    # "auto" learning rate: a short search that sets plan.hyperparameters' rates, leaving the weights as they were.
    search = learning_rate_search(plan, hooks, model=model, train_ds=train_ds, collator=collator, eval_collator=pad,
                                  labels=labels, class_weights=weights, trainable=trainable)
    clock.mark("lr_search_s")
    if search.get("stopped"):
        return TrainResult(stopped=True, steps=0, trained_tokens=0, metrics={"timings_s": dict(clock.phases)},
                           reference={}, trainable_params=trainable, total_params=total, search=search)
    set_seed(plan.seed)  # the main run draws what it would have drawn without the search
    state_box: dict[str, Any] = {"stopped": False}
    callback = _make_callback(hooks, plan, {"trainable": trainable, "total": total}, state_box)
    callbacks = [callback]
    if plan.training.early_stopping_patience and eval_ds is not None:
        callbacks.append(_early_stopping_callback(plan.training.early_stopping_patience, state_box))
    trainer = _trainer_class()(
        model=model,
        args=_training_arguments(plan, has_eval=eval_ds is not None),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=_accuracy if classification and eval_ds is not None else None,
        preprocess_logits_for_metrics=_argmax_logits if classification and eval_ds is not None else None,
        compute_loss_func=weighted_cross_entropy(weights) if weights is not None else None,
        callbacks=callbacks,
    )
    if classification and plan.training.sampler == "weighted":
        ids = _label_ids(train_ds)
        trainer.train_sampler_factory = lambda: WeightedClassSampler(ids, seed=plan.seed)
    trainer.remove_callback(PrinterCallback)  # the hooks report progress; no stdout clutter
    clock.mark("trainer_setup_s")
    output = trainer.train(resume_from_checkpoint=str(plan.resume_from) if plan.resume_from else None)
    clock.mark("train_s")
    clock.phases["train_eval_s"] = round(trainer.eval_seconds, 4)  # part of train_s
    state = trainer.state
    stopped = bool(state_box["stopped"])

    metrics: dict[str, Any] = {}
    if "train_loss" in callback.latest:
        metrics["train_loss"] = callback.latest["train_loss"]
    if output.training_loss is not None and math.isfinite(output.training_loss):
        metrics["train_loss_mean"] = float(output.training_loss)
        metrics.setdefault("train_loss", float(output.training_loss))
    if eval_ds is not None and not stopped:
        if callback.latest.get("valid_step") == state.global_step:
            evaluated = {k: v for k, v in callback.latest.items() if k in ("valid_loss", "valid_accuracy")}
        else:
            raw = trainer.evaluate()  # logs through on_log, so hooks see it as well
            evaluated = {"valid_loss": float(raw["eval_loss"])}
            if "eval_accuracy" in raw:
                evaluated["valid_accuracy"] = float(raw["eval_accuracy"])
        metrics.update(evaluated)
    metrics["train_runtime_s"] = round(time.monotonic() - started, 3)
    # The optimizer steps alone (trainer.train() less the evaluations it ran), what a script would time.
    metrics["train_phase_s"] = round(clock.phases["train_s"] - clock.phases["train_eval_s"], 4)

    world = _world_size()
    data = {
        "train_examples": len(train_ds),
        "train_skipped_examples": len(train_ds.skipped),
        "train_tokens": train_ds.tokens,
        "valid_examples": len(eval_ds) if eval_ds is not None and split["source"] != "training_file" else 0,
        "eval_examples": len(eval_ds) if eval_ds is not None else 0,
        "split": compact_split(split),
        "fed_positions": trainer.fed_positions,
        "world_size": world,
        "early_stopped_at": state_box.get("early_stopped_at"),
    }
    evaluation = None
    reference: dict = {}
    if not stopped:
        if base is not None:
            tuned = evaluate_model(trainer.model, eval_ds, collator=pad, task=plan.task, labels=labels,
                                   batch_size=batch_size)
            clock.mark("final_eval_s")
            tuned_samples = samples.after(trainer.model)
            if tuned_samples:
                clock.mark("samples_s")
            evaluation = evaluation_record(task=plan.task, split=split, base=base, tuned=tuned, majority=majority,
                                           goal=plan.training.goal, samples=tuned_samples)
            _report(hooks, stage="final", message=_evaluation_message(evaluation) + reliability_note(evaluation),
                    data=evaluation)
        clock.mark("final_eval_s")
        source = valid_examples if valid_examples is not None else train_examples
        inputs = [probe_input(row, fmt=source.format, tokenizer=tokenizer) for row in source.rows[:N_PROBES]]
        reference = reference_outputs(model, tokenizer, task=plan.task, inputs=inputs, max_length=max_len)
        if trainer.is_world_process_zero():
            clock.mark("probes_s")
            _save_artifact(plan, model, tokenizer, file_examples, metrics, evaluation=evaluation, world_size=world)
            clock.mark("save_s")
    # Where the engine's time went (a dict, so the model card's numeric metrics table leaves it out).
    metrics["timings_s"] = dict(clock.phases)

    return TrainResult(
        stopped=stopped,
        steps=state.global_step,
        trained_tokens=int(state.num_input_tokens_seen),
        metrics=metrics,
        reference=reference,
        trainable_params=trainable,
        total_params=total,
        data=data,
        evaluation=evaluation,
        search=search,
    )


class _PhaseClock:
    """Seconds spent in each phase of a run, for the job result and the benchmarks."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.phases: dict[str, float] = {}

    def mark(self, name: str) -> None:
        """Add the seconds since the last mark to phase ``name`` (a phase may be marked more than once)."""
        t = time.monotonic()
        self.phases[name] = round(self.phases.get(name, 0.0) + t - self.last, 4)
        self.last = t


def _evaluation_message(evaluation: dict) -> str:
    primary = evaluation["primary_metric"]
    base, tuned = evaluation["base"][primary], evaluation["tuned"][primary]
    name = BASELINE_NAMES[evaluation["base_kind"]]
    text = f"Evaluation: {primary} {tuned:.4g} after fine-tuning, {base:.4g} for the {name}"
    if evaluation["majority_baseline"] is not None:
        text += f", {evaluation['majority_baseline'][primary]:.4g} for the majority class"
    text += "; beat the baseline" if evaluation["beat_baseline"] else "; did not beat the baseline"
    goal = evaluation["goal"]
    if goal is not None:
        bounds = " and ".join(
            f"{op} {bound:g}" for op, bound in ((">=", goal["min"]), ("<=", goal["max"])) if bound is not None
        )
        text += f"; goal {goal['metric']} {bounds} {'met' if goal['met'] else 'not met'} ({goal['value']:.4g})"
    return text


def _save_artifact(plan: TrainPlan, model, tokenizer, examples: Examples, metrics: dict, *,
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
