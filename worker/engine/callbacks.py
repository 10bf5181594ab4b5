"""Trainer callbacks: the hooks' view of a run (HooksCallback) and early stopping on the validation loss.

Each keeps what it learned as attributes (``HooksCallback.stopped``, ``EarlyStopping.stopped_at``),
which train() reads after ``trainer.train()`` returns.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from worker.engine.plan import Hooks, flush_metrics


class HooksCallback(TrainerCallback):
    """Forwards Trainer events to the hooks and polls should_stop() after every optimizer step.

    A step's training loss is held until the Trainer is done with that step, so that a step which
    is also evaluated reaches on_metrics once, with both losses (one event, as OpenAI's read).
    """

    def __init__(self, hooks: Hooks, plan, *, trainable: int, total: int) -> None:
        self.hooks = hooks
        # plan.checkpoint_on_stop is read when the run stops, not here: should_stop() clears it when the
        # job was taken from this worker (worker/hooks.py), so that a fenced-out worker writes no
        # checkpoint into the folder the job's new holder uses (tests/reliability/test_faults.py).
        self.plan = plan
        self.trainable, self.total = trainable, total
        self.stopped = False  # should_stop() ended the run
        self.latest: dict[str, Any] = {}
        self.held: dict[str, Any] | None = None  # the last logged step's train metrics, not yet sent

    def extra_metrics(self, logs: dict, *, evaluated: bool) -> dict:
        """Method-specific metrics of a logged step (DPO's rewards: worker.engine.dpo); none by default."""
        return {}

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
            self.hooks.on_metrics(held)

    def on_train_begin(self, args, state, control, **kwargs):
        self.hooks.on_start(total_steps=state.max_steps, trainable_params=self.trainable, total_params=self.total)

    def on_step_begin(self, args, state, control, **kwargs):
        self._send_held()  # the previous step had no evaluation (it would have come before this)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self._log_train(state, logs)
        elif "eval_loss" in logs:
            self._log_eval(state, logs)

    def _log_train(self, state, logs: dict) -> None:
        self._send_held()
        metrics = self._base(state)
        metrics["train_loss"] = float(logs["loss"])
        if "learning_rate" in logs:
            metrics["learning_rate"] = float(logs["learning_rate"])
        if "grad_norm" in logs and logs["grad_norm"] is not None:
            metrics["grad_norm"] = float(logs["grad_norm"])
        metrics.update(self.extra_metrics(logs, evaluated=False))
        self.latest.update(train_loss=metrics["train_loss"], train_loss_step=state.global_step)
        self.held = metrics  # an evaluation of this step (eval_steps, epoch end) may follow

    def _log_eval(self, state, logs: dict) -> None:
        if self.held is not None and self.held["step"] != state.global_step:
            self._send_held()
        metrics = {**(self.held or {}), **self._base(state)}
        self.held = None
        metrics["valid_loss"] = float(logs["eval_loss"])
        if "eval_accuracy" in logs:
            metrics["valid_accuracy"] = float(logs["eval_accuracy"])
        metrics.update(self.extra_metrics(logs, evaluated=True))
        self.latest.update({k: v for k, v in metrics.items() if k.startswith("valid_")}, valid_step=state.global_step)
        self.hooks.on_metrics(metrics)

    def on_save(self, args, state, control, **kwargs):
        self._send_held()
        flush_metrics(self.hooks)  # the steps before a checkpoint are written before its event
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        metrics = self._base(state)
        for key in ("train_loss", "valid_loss", "valid_accuracy"):
            if key in self.latest:
                metrics[key] = self.latest[key]
        self.hooks.on_checkpoint(step=state.global_step, path=path, metrics=metrics)

    def on_train_end(self, args, state, control, **kwargs):
        self._send_held()
        flush_metrics(self.hooks)  # nothing buffered is lost when training ends early (stop, early stopping)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True  # the last step always reports its loss
        elif self.hooks.should_stop():
            self.stopped = True
            control.should_training_stop = True
            control.should_log = True
            if self.plan.checkpoint_on_stop:
                control.should_save = True


def train_loss_metrics(callback: HooksCallback, output) -> dict:
    """The last logged train loss and the mean over the run (trainer.train()'s output), when finite."""
    metrics: dict = {}
    if "train_loss" in callback.latest:
        metrics["train_loss"] = callback.latest["train_loss"]
    if output.training_loss is not None and math.isfinite(output.training_loss):
        metrics["train_loss_mean"] = float(output.training_loss)
        metrics.setdefault("train_loss", float(output.training_loss))
    return metrics


class EarlyStopping(TrainerCallback):
    """Stops once valid_loss has not improved for ``patience`` evaluations in a row."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best: float | None = None
        self.bad = 0
        self.stopped_at: int | None = None  # the step it stopped at, if it did

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        if self.best is None or loss < self.best:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                self.stopped_at = state.global_step
                control.should_training_stop = True
