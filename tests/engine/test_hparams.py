from __future__ import annotations

import pytest

from hubtune.spec import Hyperparameters, Training
from worker.engine.hparams import resolve_hyperparameters


def resolve(n, requested=None, training=None, task="sequence_classification", tuning_type="lora"):
    return resolve_hyperparameters(
        n_examples=n, task=task, tuning_type=tuning_type,
        requested=requested or Hyperparameters(), training=training or Training(),
    )


@pytest.mark.parametrize(
    "n, epochs, batch",
    [(1, 25, 1), (7, 15, 1), (10, 10, 1), (20, 5, 2), (34, 3, 4), (40, 3, 4), (100, 3, 8),
     (1000, 3, 16), (8333, 3, 16), (20_000, 1, 16), (100_000, 1, 16)],
)
def test_auto_rules(n, epochs, batch):
    hp = resolve(n)
    assert hp["n_epochs"] == epochs
    assert hp["batch_size"] == batch
    assert hp["learning_rate_multiplier"] == 1.0
    assert hp["learning_rate"] == pytest.approx(2e-4)
    assert set(hp) == {"n_epochs", "batch_size", "learning_rate_multiplier", "learning_rate", "learning_rate_search"}
    assert hp["learning_rate_search"] is True


def test_explicit_values_win():
    hp = resolve(40, Hyperparameters(n_epochs=7, batch_size=3, learning_rate_multiplier=0.5))
    assert hp == {"n_epochs": 7, "batch_size": 3, "learning_rate_multiplier": 0.5, "learning_rate": pytest.approx(1e-4),
                  "learning_rate_search": False}


def test_training_learning_rate_is_the_base():
    hp = resolve(40, training=Training(learning_rate=0.001), task="causal_lm")
    assert hp["learning_rate"] == pytest.approx(0.001)
    hp = resolve(40, Hyperparameters(learning_rate_multiplier=2), training=Training(learning_rate=0.001))
    assert hp["learning_rate"] == pytest.approx(0.002)


def test_batch_size_is_a_power_of_two():
    for n in range(1, 300):
        b = resolve(n)["batch_size"]
        assert b & (b - 1) == 0 and 1 <= b <= 16


def test_unknown_inputs_raise():
    with pytest.raises(ValueError, match="unknown task"):
        resolve(10, task="translation")
    with pytest.raises(ValueError):
        resolve(0)


def test_base_rate_per_method():
    assert resolve(10, tuning_type="lora")["learning_rate"] == 2e-4
    assert resolve(10, tuning_type="qlora")["learning_rate"] == 2e-4
    assert resolve(10, tuning_type="adapter")["learning_rate"] == 1e-3
    assert resolve(10, tuning_type="full")["learning_rate"] == 2e-5
    assert resolve(10, tuning_type="ia3")["learning_rate"] == 2e-4  # any other peft method
