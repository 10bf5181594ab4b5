"""What a training run is given and what it gives back: TrainPlan, TrainResult, and the Hooks it reports through.

No torch here: the worker builds a plan, and the distributed launcher writes it to JSON for its ranks,
without loading the training stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hubtune.spec import Training, Tuning

_PATH_FIELDS = ("model_dir", "train_file", "valid_file", "output_dir", "checkpoints_dir", "resume_from",
                "init_adapter")


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
    # A continued job (worker/lineage.py): the parent's adapter, which the method loads trainable on
    # model_dir instead of building a fresh one.
    init_adapter: Path | None = None
    # Overrides of the learning-rate search's factors, min_rung_steps, budget_fraction (tests, benches).
    search_options: dict = field(default_factory=dict)
    # OpenAI's method.type: "supervised" (transformers' Trainer) or "dpo" (trl, worker.engine.dpo; its
    # beta is in hyperparameters).
    method: str = "supervised"

    @classmethod
    def in_folder(
        cls, root: Path, *, task: str, model_dir: Path, train_file: Path, valid_file: Path | None = None,
        seed: int = 1, tuning: Tuning | None = None, training: Training | None = None,
        hyperparameters: dict | None = None, n_epochs: int = 2, batch_size: int = 8, **options: Any,
    ) -> TrainPlan:
        """A plan whose artifact and checkpoints go under ``root`` (``out/``, ``checkpoints/``), for
        scripts, tests and benches. Without ``hyperparameters`` they are the given epochs and batch
        size at ``training.learning_rate`` (1e-2 when unset) with no multiplier, as a resolved set is."""
        training = training if training is not None else Training()
        if hyperparameters is None:
            hyperparameters = {"n_epochs": n_epochs, "batch_size": batch_size,
                               "learning_rate": training.learning_rate or 1e-2, "learning_rate_multiplier": 1.0}
        return cls(task=task, model_dir=Path(model_dir), train_file=Path(train_file),
                   valid_file=Path(valid_file) if valid_file is not None else None,
                   output_dir=Path(root) / "out", checkpoints_dir=Path(root) / "checkpoints", seed=seed,
                   tuning=tuning if tuning is not None else Tuning(), training=training,
                   hyperparameters=hyperparameters, **options)

    def to_json(self) -> dict:
        """The plan as JSON values (paths as strings, the spec models as dicts)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, (Tuning, Training)):
                value = value.model_dump(mode="json")
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict) -> TrainPlan:
        values = dict(data)
        for name in _PATH_FIELDS:
            if values.get(name) is not None:
                values[name] = Path(values[name])
        values["tuning"] = Tuning.model_validate(values["tuning"])
        values["training"] = Training.model_validate(values["training"])
        return cls(**values)


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
    - ``flush_metrics`` (optional): write metrics the hooks batch (worker.hooks.JobHooks); see
      :func:`flush_metrics`.
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


def flush_metrics(hooks) -> None:
    """Hooks that batch metrics (worker.hooks.JobHooks) write what they hold; others have nothing to do.
    Called before a checkpoint's event (the steps before it are written first) and when a run ends."""
    flush = getattr(hooks, "flush_metrics", None)
    if flush is not None:
        flush()


def report_evaluation(hooks, *, stage: str, message: str, data: dict) -> None:
    """``hooks.on_evaluation`` where the hooks have it (it is optional)."""
    on_evaluation = getattr(hooks, "on_evaluation", None)
    if on_evaluation is not None:
        on_evaluation(stage=stage, message=message, data=data)
