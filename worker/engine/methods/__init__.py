"""Tuning methods: a registry of builders, name -> ``build(model, tuning, *, task, modules_to_save)``.

A builder takes a freshly loaded base model, the job's :class:`hubtune.spec.Tuning` and the task
(``sequence_classification`` | ``causal_lm``) and returns the model to train (for LoRA a peft model)
with only the tuned parameters trainable. ``modules_to_save`` names modules the base checkpoint did
not contain (a new classification head, ...) that must be trained in full and saved with the artifact.
"""

from __future__ import annotations

from typing import Protocol


class MethodBuilder(Protocol):
    def __call__(self, model, tuning, *, task: str, modules_to_save: list[str] | None = None): ...


class UnknownMethodError(ValueError):
    pass


_METHODS: dict[str, MethodBuilder] = {}


def register(name: str, builder: MethodBuilder | None = None):
    """Register ``builder`` under ``name``; usable as ``@register("name")``. A duplicate name raises."""

    def add(fn: MethodBuilder) -> MethodBuilder:
        if name in _METHODS:
            raise ValueError(f"tuning method {name!r} is already registered")
        _METHODS[name] = fn
        return fn

    return add(builder) if builder is not None else add


def get_method(name: str) -> MethodBuilder:
    try:
        return _METHODS[name]
    except KeyError:
        known = ", ".join(sorted(_METHODS)) or "none"
        raise UnknownMethodError(f"unknown tuning method {name!r}; known: {known}") from None


def available_methods() -> list[str]:
    return sorted(_METHODS)


from worker.engine.methods import lora as _lora  # noqa: E402,F401  (registers "lora")
