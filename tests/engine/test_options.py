"""Prepare checks a request's options before any model is loaded: the checks import no torch."""

from __future__ import annotations

import pytest

from hubtune.spec import Training
from tests.engine.test_runtime import _run
from worker.engine.options import OptionError, check_training_options


def test_the_option_checks_and_the_plan_import_no_torch():
    result = _run("""
        import json, sys
        import worker.engine.options, worker.engine.plan
        print(json.dumps({"torch": "torch" in sys.modules}))
    """)
    assert result == {"torch": False}


def test_an_option_that_does_not_fit_the_task_names_its_field():
    with pytest.raises(OptionError) as info:
        check_training_options(Training(packing=True), task="sequence_classification", labels=["a", "b"])
    assert info.value.param == "training.packing"
