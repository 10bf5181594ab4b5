"""What a tracker records about a job: its settings as flat params, the numbers of a metrics step."""

from __future__ import annotations

import math
from typing import Any

from hubtune.spec import JobRequest

# Engine bookkeeping in a metrics step, not a metric.
NOT_METRICS = frozenset({"step", "total_steps"})


def job_params(request: JobRequest, hyperparameters: dict[str, Any] | None, seed: int) -> dict[str, str]:
    """The effective settings: resolved hyperparameters (prepare's "auto" answers), tuning, training."""
    params: dict[str, Any] = {"model": request.model, "task": request.task, "seed": seed,
                              "method": (request.method.type if request.method else "supervised")}
    for name, value in (hyperparameters or request.effective_hyperparameters().model_dump()).items():
        params[f"hyperparameters.{name}"] = value
    _flatten(params, "tuning", request.tuning.model_dump(mode="json"))
    _flatten(params, "training", request.training.model_dump(mode="json"))
    return {name: str(value) for name, value in params.items() if value is not None}


def _flatten(out: dict[str, Any], prefix: str, values: dict[str, Any]) -> None:
    for name, value in values.items():
        if isinstance(value, dict) and value:
            _flatten(out, f"{prefix}.{name}", value)
        elif value not in (None, {}, []):
            out[f"{prefix}.{name}"] = value


def step_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of one metrics step (train_loss, valid_loss, learning_rate, epoch, ...)."""
    out = {}
    for name, value in metrics.items():
        if name in NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[name] = float(value)
    return out


def evaluation_metrics(stage: str, data: dict[str, Any]) -> dict[str, float]:
    """The numbers of a baseline or final evaluation, named like eval/tuned_accuracy."""
    out = {}
    for group in ("base", "tuned", "majority_baseline"):
        values = data.get(group)
        if isinstance(values, dict):
            for name, value in step_metrics(values).items():
                out[f"eval/{group}_{name}"] = value
    return out if stage in ("baseline", "final") else {}
