from __future__ import annotations

import pytest
from pydantic import ValidationError

from hubtune.spec import JobRequest

BASE = {"model": "org/m", "training_file": "file-a"}


def test_design_example_is_accepted_and_defaults_filled():
    req = JobRequest.model_validate({
        **BASE, "validation_file": None, "suffix": "tickets", "seed": 42,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}}},
        "task": "sequence_classification",
        "tuning": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "auto"},
        "training": {"learning_rate": 0.0002, "max_seq_length": 256},
        "hub": {"repo_id": "acme/tickets-minilm-lora", "private": True, "branch": "main"},
    })
    assert req.tuning.r == 8 and req.hub.repo_id == "acme/tickets-minilm-lora"
    assert req.training.max_seq_length == 256


@pytest.mark.parametrize("patch, loc", [
    ({"tuning": {"rank": 8}}, ("tuning", "rank")),
    ({"bogus": 1}, ("bogus",)),
    ({"tuning": {"r": 0}}, ("tuning", "r")),
    ({"method": {"supervised": {"hyperparameters": {"n_epochs": 1000}}}}, ("method", "supervised", "hyperparameters", "n_epochs")),
    ({"training": {"learning_rate": -1}}, ("training", "learning_rate")),
    ({"task": "translation"}, ("task",)),
])
def test_bad_fields_are_named(patch, loc):
    with pytest.raises(ValidationError) as info:
        JobRequest.model_validate({**BASE, **patch})
    assert any(err["loc"][: len(loc)] == loc for err in info.value.errors())


def test_method_hyperparameters_win_over_legacy_ones():
    req = JobRequest.model_validate({
        **BASE, "hyperparameters": {"n_epochs": 2},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 5}}},
    })
    assert req.effective_hyperparameters().n_epochs == 5
