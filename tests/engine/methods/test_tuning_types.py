"""The API's list of tuning types (hubtune.spec, read without torch) is the worker's method registry."""

from __future__ import annotations

import pytest

from hubtune.spec import BUILTIN_TUNING, PEFT_TUNING, TUNING_TYPES, UNSUPPORTED_PEFT
from worker.engine.methods import MethodError, available_methods, get_method
from worker.engine.methods import peft_methods


def test_the_api_accepts_exactly_the_methods_the_worker_registers():
    # Fails when peft adds or drops a method: update hubtune.spec.PEFT_TUNING to match.
    assert list(TUNING_TYPES) == available_methods()
    assert sorted(PEFT_TUNING) == peft_methods.peft_method_names()
    assert set(BUILTIN_TUNING) <= set(available_methods()) and not set(BUILTIN_TUNING) & set(PEFT_TUNING)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_PEFT))
def test_unsupported_peft_methods_are_peft_methods_the_worker_refuses_with_the_same_reason(name):
    assert name in peft_methods._config_classes()
    with pytest.raises(MethodError) as err:
        get_method(name)
    assert str(err.value) == UNSUPPORTED_PEFT[name]
