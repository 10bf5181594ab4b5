"""The mapping from ``tuning.type`` to its method, in one module (as peft keeps PEFT_TYPE_TO_CONFIG_MAPPING).

The built-in methods are registered here, by import, rather than by a decorator in each method module:
the method modules then import only ``methods.base``, and nothing imports back into the registry.
peft's own methods are looked up (and registered) on first use, so that importing the registry does not
import peft.
"""

from __future__ import annotations

from worker.engine.methods.adapter import Adapter
from worker.engine.methods.base import TuningMethod, UnknownMethodError
from worker.engine.methods.full import Full
from worker.engine.methods.lora import Lora
from worker.engine.methods.qlora import QLora

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
        if method is not None:
            register(method)
    if method is None:
        known = ", ".join(available_methods()) or "none"
        raise UnknownMethodError(f"unknown tuning method {name!r}; known: {known}", param="tuning.type")
    return method


def available_methods() -> list[str]:
    """Every name `get_method` accepts: the built-in methods and the supported peft methods."""
    from worker.engine.methods import peft_methods

    return sorted(set(_METHODS) | set(peft_methods.peft_method_names()))


for _builtin in (Lora, Full, Adapter, QLora):
    register(_builtin)
