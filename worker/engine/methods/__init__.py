"""Tuning methods: each a small module with its config handling and builder, registered here by name.

A method checks a request, builds the model to train from a freshly loaded base model, the job's
:class:`hubtune.spec.Tuning` and the task (``sequence_classification`` | ``causal_lm``), saves the
artifact and loads it back. ``modules_to_save`` names modules the base checkpoint did not contain
(a new classification head, ...) that must be trained in full and saved with the artifact.
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


_METHODS: dict[str, TuningMethod] = {}


def register(method: TuningMethod) -> TuningMethod:
    """Register `method` under `method.name`; a duplicate name raises. Usable as a class decorator
    (`@register` on a class registers an instance of it)."""
    instance = method() if isinstance(method, type) else method
    if instance.name in _METHODS:
        raise ValueError(f"tuning method {instance.name!r} is already registered")
    _METHODS[instance.name] = instance
    return method


def get_method(name: str) -> TuningMethod:
    """The method registered as `name`, else the peft method of that config name (registered on first
    use, so that importing the registry does not import peft); UnknownMethodError lists the known."""
    method = _METHODS.get(name)
    if method is None:
        from worker.engine.methods import peft_methods

        method = peft_methods.lookup(name)
    if method is None:
        known = ", ".join(available_methods()) or "none"
        raise UnknownMethodError(f"unknown tuning method {name!r}; known: {known}", param="tuning.type")
    return method


def available_methods() -> list[str]:
    """Every name `get_method` accepts: the built-in methods and the supported peft methods."""
    from worker.engine.methods import peft_methods

    return sorted(set(_METHODS) | set(peft_methods.peft_method_names()))


# Importing these registers them (the peft methods register lazily, see get_method).
from worker.engine.methods import adapter as _adapter  # noqa: E402,F401
from worker.engine.methods import full as _full  # noqa: E402,F401
from worker.engine.methods import lora as _lora  # noqa: E402,F401
from worker.engine.methods import qlora as _qlora  # noqa: E402,F401
