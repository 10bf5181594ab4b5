"""Tuning methods: each a small module with its config handling and builder, registered here by name.

A method checks a request, builds the model to train from a freshly loaded base model, the job's
:class:`hubtune.spec.Tuning` and the task (``sequence_classification`` | ``causal_lm``), saves the
artifact and loads it back. ``modules_to_save`` names modules the base checkpoint did not contain
(a new classification head, ...) that must be trained in full and saved with the artifact.
"""

from __future__ import annotations

from worker.engine.methods.base import MethodError, TuningMethod, UnknownMethodError
from worker.engine.methods.registry import available_methods, get_method, register

__all__ = ["MethodError", "TuningMethod", "UnknownMethodError", "available_methods", "get_method", "register"]
