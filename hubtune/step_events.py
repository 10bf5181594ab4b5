"""Training steps as events: how a logged step reads, and which steps a job's event list shows.

Every logged step is stored (the metrics series the charts draw stays complete), but a long run would
bury its lifecycle events under thousands of step events. So a job shows about MAX_STEP_EVENTS of them:
its first logged step, then one at most every `stride` steps, its last step, the step where it was
stopped, and every evaluation. The other steps are stored as SERIES rows, which the events API leaves
out and the metrics series (GET /v1/fine_tuning/jobs/{id}/metrics) includes.
"""

from __future__ import annotations

import math
from typing import Any

MAX_STEP_EVENTS = 200
METRICS = "metrics"  # a step shown in the job's events (OpenAI's event type)
SERIES = "series"  # a step kept only as a point of the metrics series
SERIES_TYPES = (METRICS, SERIES)

# What the message names each metric, in OpenAI's words ("Step 5/42: training loss=0.123").
_LABELS = (
    ("train_loss", "training loss"),
    ("valid_loss", "validation loss"),
    ("valid_accuracy", "validation accuracy"),
    # DPO (worker/engine/dpo.py): how often the preferred reply wins, and by how much (trl's rewards).
    ("train_preference_accuracy", "preference accuracy"),
    ("train_rewards_margin", "reward margin"),
    ("valid_preference_accuracy", "validation preference accuracy"),
    ("valid_rewards_margin", "validation reward margin"),
)


def stride(total_steps: int) -> int:
    """Steps between two shown step events: the first step, one every `stride` after it and the last
    make at most MAX_STEP_EVENTS (evaluations and a stop step come on top)."""
    return max(1, math.ceil((max(total_steps, 1) - 1) / (MAX_STEP_EVENTS - 2)))


def is_evaluation(metrics: dict[str, Any]) -> bool:
    return any(key.startswith("valid_") for key in metrics)


def step_message(metrics: dict[str, Any], *, total_steps: int) -> str:
    """`Step 5/42: training loss=0.123, validation loss=0.2`, as OpenAI words its step events."""
    parts = [f"{label}={metrics[key]:.4g}" for key, label in _LABELS if isinstance(metrics.get(key), (int, float))]
    head = f"Step {int(metrics.get('step', 0))}/{total_steps}"
    return f"{head}: {', '.join(parts)}" if parts else head


class StepThinner:
    """Decides, step by step, which logged steps are shown as events (see the module's docstring)."""

    def __init__(self, *, total_steps: int) -> None:
        self.total_steps = total_steps
        self.stride = stride(total_steps)
        self._last_shown: int | None = None
        self.stopping = False  # set when training was told to stop: the step it stops at is shown

    def shows(self, metrics: dict[str, Any]) -> bool:
        step = int(metrics.get("step", 0))
        shown = (self._last_shown is None or step - self._last_shown >= self.stride or step >= self.total_steps
                 or self.stopping or is_evaluation(metrics))
        if shown:
            self._last_shown = step
        return shown
