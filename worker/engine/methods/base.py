"""What every tuning method is (TuningMethod) and the error a method raises for a request it cannot run.

A leaf module: the method modules and the registry import it, it imports none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from hubtune.errors import JobError


class TuningMethod(Protocol):
    """One way of tuning a model. The trainer only talks to methods through this interface."""

    name: str

    def check(self, tuning, *, task: str, device: str | None) -> None:
        """Refuse what cannot run, before any weight is loaded (raise MethodError naming the field).
        `device` is "cuda" or "cpu" on the machine that trains, None where there is none yet (prepare):
        then only what holds on any machine."""

    def base_model_kwargs(self, tuning) -> dict[str, Any]:
        """Extra `from_pretrained` arguments for the base model (e.g. a 4-bit quantization config)."""

    def build(self, model, tuning, *, task: str, modules_to_save: list[str] | None = None):
        """The model to train: only the tuned parameters (and new modules_to_save) trainable."""

    def resume(self, base_model, adapter_dir: Path, tuning, *, task: str):
        """Like build, but the tuned weights are an earlier job's (its artifact or a checkpoint folder),
        loaded trainable: a continued job trains the same adapter further (worker/lineage.py)."""

    def save(self, model, output_dir: Path) -> None:
        """Write the artifact's weights and config into output_dir (safetensors only)."""

    def load(self, base_model, artifact_dir: Path | str):
        """The inverse of save: the base model with the tuned weights, ready for inference."""


class MethodError(JobError, ValueError):
    """A tuning request that cannot run; `param` names the field (e.g. "tuning.type")."""

    code = "invalid_tuning"

    def __init__(self, message: str, *, param: str = "tuning.type") -> None:
        super().__init__(self.code, message, param)


class UnknownMethodError(MethodError):
    """`tuning.type` names no registered method and no peft method."""
