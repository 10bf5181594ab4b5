"""Training: transformers' Trainer + a tuning method (peft), reporting through hooks.

``train(plan, hooks)`` is the one entry point the Celery task calls; it knows nothing about jobs,
the database or the hub. It runs the plan here (``train_local``) or, for ``training.n_gpus > 1``,
on several processes (worker.engine.distributed, whose ranks run ``train_local``).

``train_local`` runs in phases, each a function below, timed by a phase clock: load (data, tokenizer,
model, method), tokenize, baseline (probe or base-model evaluation, base completions), learning-rate
search, the Trainer's steps, then the final evaluation, the reference outputs and the artifact.

The names below the imports that this module does not use are re-exported for callers that import
them from here (published model cards import ``load_for_inference`` from this module).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from transformers import PrinterCallback, set_seed

from worker.engine.artifact import TRAINING_INFO_FILE, load_for_inference, save_artifact  # noqa: F401
from worker.engine.callbacks import EarlyStopping, HooksCallback, train_loss_metrics
from worker.engine.completions import SampleRun
from worker.engine.data import SEQUENCE_CLASSIFICATION, DataError, Examples, check_validation, load_examples
from worker.engine.datasets import PadCollator, build_dataset
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
from worker.engine.hf_trainer import (  # noqa: F401 (resolve_bf16, training_arguments: re-exported)
    EngineTrainer,
    accuracy,
    argmax_logits,
    resolve_bf16,
    training_arguments,
    world_size,
)
from worker.engine.loading import count_params, load_base_model, load_tokenizer, quiet
from worker.engine.lr_search import learning_rate_search
from worker.engine.methods import get_method
from worker.engine.options import check_training_options
from worker.engine.packing import PackingCollator
from worker.engine.plan import Hooks, NullHooks, TrainPlan, TrainResult, report_evaluation  # noqa: F401
from worker.engine.probe import linear_probe
from worker.engine.reference import N_PROBES, TOP_K, probe_inputs, reference_outputs  # noqa: F401
from worker.engine.sampling import WeightedClassSampler, class_weights, weighted_cross_entropy
from worker.engine.verdict import reliability_note


def train(plan: TrainPlan, hooks: Hooks) -> TrainResult:
    """Fine-tune ``plan.model_dir`` on ``plan.train_file`` per the plan; see the module docstring.

    With ``training.n_gpus > 1`` (and not already inside a distributed launch) the run is handed to
    ``worker.engine.distributed``, which starts one process per device and relays rank 0's reports.

    Raises DataError for bad data, ValueError for a bad plan (unknown method, targets that match no
    layer, options that do not fit the task). On success (not stopped) ``plan.output_dir`` holds the
    adapter, the tokenizer and ``hubtune_training.json``.
    """
    if plan.training.n_gpus > 1 and world_size() == 1:
        from worker.engine.distributed import train_distributed

        return train_distributed(plan, hooks)
    return train_local(plan, hooks)


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


@dataclass
class _Run:
    """What the phases of one run hand each other."""

    plan: TrainPlan
    hooks: Hooks
    clock: _PhaseClock
    file_examples: Examples  # the training file as read
    valid_examples: Examples | None  # the validation file, if any
    train_examples: Examples  # what is trained on (the file less a held-out split)
    eval_examples: Examples
    split: dict
    tokenizer: Any = None
    model: Any = None
    trainable: int = 0
    total: int = 0
    train_ds: Any = None
    eval_ds: Any = None
    pad: Any = None
    base: dict | None = None  # the baseline's metrics (None without an evaluation split)
    majority: dict | None = None
    samples: SampleRun = field(default_factory=SampleRun)

    @property
    def classification(self) -> bool:
        return self.plan.task == SEQUENCE_CLASSIFICATION

    @property
    def labels(self) -> list[str]:
        return self.file_examples.labels if self.classification else []

    @property
    def batch_size(self) -> int:
        return self.plan.hyperparameters["batch_size"]


def train_local(plan: TrainPlan, hooks: Hooks) -> TrainResult:
    """Train ``plan`` in this process (one rank of a distributed run, or the whole run)."""
    if plan.method == "dpo":  # preference pairs: trl's DPOTrainer, its own phases
        from worker.engine.dpo import train_dpo

        return train_dpo(plan, hooks)
    quiet()
    started = time.monotonic()
    run = _load(plan, hooks, _PhaseClock())
    _tokenize(run)
    _baseline(run)
    weights = class_weights(plan.training.class_weights, labels=run.labels,
                            label_ids=_label_ids(run.train_ds)) if run.classification else None
    collator = (PackingCollator(max_length=plan.training.max_seq_length, pad_id=run.tokenizer.pad_token_id)
                if plan.training.packing else run.pad)
    # "auto" learning rate: a short search that sets plan.hyperparameters' rates, leaving the weights as they were.
    search = learning_rate_search(plan, hooks, model=run.model, train_ds=run.train_ds, collator=collator,
                                  eval_collator=run.pad, labels=run.labels, class_weights=weights,
                                  trainable=run.trainable)
    run.clock.mark("lr_search_s")
    if search.get("stopped"):
        return TrainResult(stopped=True, steps=0, trained_tokens=0, metrics={"timings_s": dict(run.clock.phases)},
                           reference={}, trainable_params=run.trainable, total_params=run.total, search=search)
    set_seed(plan.seed)  # the main run draws what it would have drawn without the search
    trainer, callback, early = _make_trainer(run, collator=collator, weights=weights)
    run.clock.mark("trainer_setup_s")
    output = trainer.train(resume_from_checkpoint=str(plan.resume_from) if plan.resume_from else None)
    run.clock.mark("train_s")
    run.clock.phases["train_eval_s"] = round(trainer.eval_seconds, 4)  # part of train_s
    stopped = callback.stopped
    metrics = _final_metrics(run, trainer, callback, output, stopped=stopped)
    metrics["train_runtime_s"] = round(time.monotonic() - started, 3)
    # The optimizer steps alone (trainer.train() less the evaluations it ran), what a script would time.
    metrics["train_phase_s"] = round(run.clock.phases["train_s"] - run.clock.phases["train_eval_s"], 4)
    data = _data_record(run, trainer, early_stopped_at=early.stopped_at if early is not None else None)
    evaluation, reference = (None, {}) if stopped else _finish(run, trainer, metrics)
    # Where the engine's time went (a dict, so the model card's numeric metrics table leaves it out).
    metrics["timings_s"] = dict(run.clock.phases)
    return TrainResult(stopped=stopped, steps=trainer.state.global_step,
                       trained_tokens=int(trainer.state.num_input_tokens_seen), metrics=metrics,
                       reference=reference, trainable_params=run.trainable, total_params=run.total, data=data,
                       evaluation=evaluation, search=search)


def _load_data(plan: TrainPlan) -> tuple[Examples, Examples | None]:
    train_examples = load_examples(plan.train_file, task=plan.task, param="training_file")
    valid_examples = None
    if plan.valid_file is not None:
        valid_examples = load_examples(plan.valid_file, task=plan.task, param="validation_file")
        check_validation(train_examples, valid_examples)
    check_training_options(plan.training, task=plan.task, labels=train_examples.labels)
    return train_examples, valid_examples


def _load(plan: TrainPlan, hooks: Hooks, clock: _PhaseClock) -> _Run:
    """Phase "load_s": the data files, the evaluation split, the tokenizer, the base model and the method."""
    file_examples, valid_examples = _load_data(plan)
    train_examples, eval_examples, split = split_for_evaluation(
        file_examples, valid_examples, fraction=plan.training.validation_split, seed=plan.seed
    )
    run = _Run(plan=plan, hooks=hooks, clock=clock, file_examples=file_examples, valid_examples=valid_examples,
               train_examples=train_examples, eval_examples=eval_examples, split=split)
    set_seed(plan.seed)
    run.tokenizer = load_tokenizer(plan.model_dir, trust_remote_code=plan.trust_remote_code)
    method = get_method(plan.tuning.type)
    model, new_modules = load_base_model(
        plan.model_dir, task=plan.task, labels=run.labels, tokenizer=run.tokenizer,
        method_kwargs=method.base_model_kwargs(plan.tuning), trust_remote_code=plan.trust_remote_code,
    )
    if plan.init_adapter is not None:  # a continued job: the parent's adapter, trained further
        run.model = method.resume(model, plan.init_adapter, plan.tuning, task=plan.task)
    else:
        run.model = method.build(model, plan.tuning, task=plan.task, modules_to_save=new_modules)
    run.trainable, run.total = count_params(run.model)
    clock.mark("load_s")
    return run


def _tokenize(run: _Run) -> None:
    """Phase "tokenize_s": the training and evaluation datasets (an empty evaluation set becomes None)."""
    max_len = run.plan.training.max_seq_length
    label2id = run.file_examples.label2id
    run.train_ds = build_dataset(run.train_examples, tokenizer=run.tokenizer, max_seq_length=max_len,
                                 label2id=label2id)
    if len(run.train_ds) == 0:
        raise DataError(
            f"no training example has a trained token left after truncation at max_seq_length={max_len}",
            code="invalid_file_format",
            param="training_file",
        )
    eval_ds = build_dataset(run.eval_examples, tokenizer=run.tokenizer, max_seq_length=max_len, label2id=label2id)
    run.eval_ds = eval_ds if len(eval_ds) else None
    run.pad = PadCollator(run.tokenizer.pad_token_id)
    run.clock.mark("tokenize_s")


def _baseline(run: _Run) -> None:
    """Phase "probe_s" (classification) or "baseline_eval_s" (+ "samples_s"): what tuning must beat."""
    plan, eval_ds = run.plan, run.eval_ds
    if eval_ds is not None:
        if run.classification:
            # A linear probe on the frozen base model's embeddings (a fresh random head scores its seed).
            run.base, probe = linear_probe(run.model, train_features=run.train_ds.features,
                                           eval_features=eval_ds.features, labels=run.labels,
                                           training=plan.training, collator=run.pad, batch_size=run.batch_size,
                                           seed=plan.seed)
            run.majority = majority_baseline(train_label_ids=_label_ids(run.train_ds),
                                             eval_label_ids=_label_ids(eval_ds), labels=run.labels)
        else:
            run.base, probe = evaluate_model(run.model, eval_ds, collator=run.pad, task=plan.task, labels=run.labels,
                                             batch_size=run.batch_size), None
        text = (f"Baseline on {len(eval_ds)} {run.split['source'].replace('_', ' ')} examples: "
                f"{BASELINE_NAMES[BASE_KIND[plan.task]]}: {summary(run.base)}")
        if run.majority is not None:
            text += f"; majority class: {summary(run.majority)}"
        report_evaluation(run.hooks, stage="baseline", message=text,
                          data={"split": compact_split(run.split), "primary_metric": PRIMARY_METRIC[plan.task],
                                "base": run.base, "base_kind": BASE_KIND[plan.task],
                                "majority_baseline": run.majority, "probe": probe})
    run.clock.mark("probe_s" if run.classification else "baseline_eval_s")
    if eval_ds is not None and not run.classification:
        # every method: before any step
        run.samples.before(run.model, run.tokenizer, run.eval_examples, max_length=plan.training.max_seq_length)
        run.clock.mark("samples_s")


def _make_trainer(run: _Run, *, collator, weights) -> tuple[EngineTrainer, HooksCallback, EarlyStopping | None]:
    plan, evaluated = run.plan, run.eval_ds is not None
    callback = HooksCallback(run.hooks, plan, trainable=run.trainable, total=run.total)
    early = EarlyStopping(plan.training.early_stopping_patience) if (
        plan.training.early_stopping_patience and evaluated) else None
    trainer = EngineTrainer(
        model=run.model,
        args=training_arguments(plan, has_eval=evaluated),
        train_dataset=run.train_ds,
        eval_dataset=run.eval_ds,
        data_collator=collator,
        processing_class=run.tokenizer,
        compute_metrics=accuracy if run.classification and evaluated else None,
        preprocess_logits_for_metrics=argmax_logits if run.classification and evaluated else None,
        compute_loss_func=weighted_cross_entropy(weights) if weights is not None else None,
        callbacks=[callback] + ([early] if early is not None else []),
    )
    if run.classification and plan.training.sampler == "weighted":
        ids = _label_ids(run.train_ds)
        trainer.train_sampler_factory = lambda: WeightedClassSampler(ids, seed=plan.seed)
    trainer.remove_callback(PrinterCallback)  # the hooks report progress; no stdout clutter
    return trainer, callback, early


def _final_metrics(run: _Run, trainer, callback: HooksCallback, output, *, stopped: bool) -> dict[str, Any]:
    """The last train loss, the mean over the run, and the validation metrics at the last step."""
    metrics: dict[str, Any] = train_loss_metrics(callback, output)
    if run.eval_ds is not None and not stopped:
        if callback.latest.get("valid_step") == trainer.state.global_step:
            evaluated = {k: v for k, v in callback.latest.items() if k in ("valid_loss", "valid_accuracy")}
        else:
            raw = trainer.evaluate()  # logs through on_log, so hooks see it as well
            evaluated = {"valid_loss": float(raw["eval_loss"])}
            if "eval_accuracy" in raw:
                evaluated["valid_accuracy"] = float(raw["eval_accuracy"])
        metrics.update(evaluated)
    return metrics


def _data_record(run: _Run, trainer, *, early_stopped_at: int | None) -> dict:
    eval_ds, split = run.eval_ds, run.split
    return {
        "train_examples": len(run.train_ds),
        "train_skipped_examples": len(run.train_ds.skipped),
        "train_tokens": run.train_ds.tokens,
        "valid_examples": len(eval_ds) if eval_ds is not None and split["source"] != "training_file" else 0,
        "eval_examples": len(eval_ds) if eval_ds is not None else 0,
        "split": compact_split(split),
        "fed_positions": trainer.fed_positions,
        "world_size": world_size(),
        "early_stopped_at": early_stopped_at,
    }


def _finish(run: _Run, trainer, metrics: dict) -> tuple[dict | None, dict]:
    """Phases "final_eval_s", "probes_s", "save_s" of a run that was not stopped: (evaluation, reference)."""
    plan, clock = run.plan, run.clock
    evaluation = None
    if run.base is not None:
        tuned = evaluate_model(trainer.model, run.eval_ds, collator=run.pad, task=plan.task, labels=run.labels,
                               batch_size=run.batch_size)
        clock.mark("final_eval_s")
        tuned_samples = run.samples.after(trainer.model)
        if tuned_samples:
            clock.mark("samples_s")
        evaluation = evaluation_record(task=plan.task, split=run.split, base=run.base, tuned=tuned,
                                       majority=run.majority, goal=plan.training.goal, samples=tuned_samples)
        report_evaluation(run.hooks, stage="final", data=evaluation,
                          message=_evaluation_message(evaluation) + reliability_note(evaluation))
    clock.mark("final_eval_s")
    source = run.valid_examples if run.valid_examples is not None else run.train_examples
    reference = reference_outputs(run.model, run.tokenizer, task=plan.task,
                                  inputs=probe_inputs(source, tokenizer=run.tokenizer),
                                  max_length=plan.training.max_seq_length)
    if trainer.is_world_process_zero():
        clock.mark("probes_s")
        save_artifact(plan, run.model, run.tokenizer, run.file_examples, metrics, evaluation=evaluation,
                      world_size=world_size())
        clock.mark("save_s")
    return evaluation, reference


def _label_ids(dataset) -> list[int]:
    return [int(f["labels"]) for f in dataset.features]


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
