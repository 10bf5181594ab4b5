"""Option checks that need no torch: prepare refuses a bad request before any model is loaded.

The errors here (OptionError) and the goal metrics are shared by the sampling, evaluation and
distributed modules, which import torch; keeping them in a torch-free leaf module is what lets
``worker.prepare`` validate options cheaply and keeps those modules free of import cycles.
"""

from __future__ import annotations

from hubtune.errors import JobError
from worker.engine.data import CAUSAL_LM, SEQUENCE_CLASSIFICATION  # data.py reads files; no torch


class OptionError(JobError, ValueError):
    """A training option that does not fit the data or task; ``param`` names the field."""

    code = "invalid_training_option"

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(self.code, message, param)


GOAL_METRICS = {
    SEQUENCE_CLASSIFICATION: ("accuracy", "macro_f1", "valid_loss"),
    CAUSAL_LM: ("valid_loss", "perplexity"),
}


def check_goal(goal, *, task: str) -> None:
    if goal is None:
        return
    known = GOAL_METRICS[task]
    if goal.metric not in known:
        raise OptionError(
            f"goal metric {goal.metric!r} is not reported for {task}; choose one of {', '.join(known)}",
            param="training.goal.metric",
        )


def check_class_weights(setting, *, labels: list[str]) -> None:
    """A {label: weight} map may only name labels the training file has ("balanced" always fits)."""
    if setting is None or setting == "balanced":
        return
    unknown = [label for label in setting if label not in labels]
    if unknown:
        raise OptionError(
            f"class_weights names label {unknown[0]!r}, which the training file does not have "
            f"(labels: {', '.join(labels)})",
            param=f"training.class_weights.{unknown[0]}",
        )


def check_training_options(training, *, task: str, labels: list[str]) -> None:
    """Refuse options that do not fit the task or data before anything is trained (prepare and train)."""
    classification = task == SEQUENCE_CLASSIFICATION
    if training.class_weights is not None:
        if not classification:
            raise OptionError("class_weights apply to sequence_classification only", param="training.class_weights")
        check_class_weights(training.class_weights, labels=labels)
    if training.sampler == "weighted" and not classification:
        raise OptionError('sampler "weighted" applies to sequence_classification only', param="training.sampler")
    if training.packing and classification:
        raise OptionError("packing applies to causal_lm only", param="training.packing")
    check_goal(training.goal, task=task)
