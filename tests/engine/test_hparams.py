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
    # The general rules, as a causal LM gets them (classification adds its own: tests below).
    hp = resolve(n, task="causal_lm")
    assert hp["n_epochs"] == epochs
    assert hp["batch_size"] == batch
    assert hp["learning_rate_multiplier"] == 1.0
    assert hp["learning_rate"] == pytest.approx(2e-4)
    assert set(hp) == {"n_epochs", "batch_size", "learning_rate_multiplier", "learning_rate", "learning_rate_search"}
    assert hp["learning_rate_search"] is True


def test_explicit_values_win():
    hp = resolve(40, Hyperparameters(n_epochs=7, batch_size=3, learning_rate_multiplier=0.5), task="causal_lm")
    assert hp == {"n_epochs": 7, "batch_size": 3, "learning_rate_multiplier": 0.5, "learning_rate": pytest.approx(1e-4),
                  "learning_rate_search": False}
    # A classifier's explicit epochs are kept too, though they make fewer than 200 steps.
    hp = resolve(40, Hyperparameters(n_epochs=2, learning_rate_multiplier=0.5))
    assert hp["n_epochs"] == 2 and hp["learning_rate"] == pytest.approx(5e-4)


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
    for task in ("causal_lm", "sequence_classification"):
        assert resolve(10, tuning_type="adapter", task=task)["learning_rate"] == 1e-3
        assert resolve(10, tuning_type="full", task=task)["learning_rate"] == 2e-5
        assert resolve(10, tuning_type="ia3", task=task)["learning_rate"] == 2e-4  # any other peft method
    assert resolve(10, tuning_type="lora", task="causal_lm")["learning_rate"] == 2e-4
    assert resolve(10, tuning_type="qlora", task="causal_lm")["learning_rate"] == 2e-4


def test_classifier_lora_rate_is_higher():
    # LoRA on a sequence classifier: 1e-3 (plain-script grid on MiniLM; BENCHMARKS.md).
    assert resolve(10, tuning_type="lora")["learning_rate"] == pytest.approx(1e-3)
    assert resolve(10, tuning_type="qlora")["learning_rate"] == pytest.approx(1e-3)
    # an explicit base rate still wins
    assert resolve(10, training=Training(learning_rate=1e-4))["learning_rate"] == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "n, epochs, batch",
    # (steps an epoch) -> epochs for >= 200 steps, at most 25
    [(1, 25, 1), (10, 20, 1), (40, 20, 4), (68, 23, 8), (100, 16, 8), (500, 7, 16), (1000, 4, 16),
     (1600, 3, 16), (20_000, 1, 16)],
)
def test_classifier_makes_at_least_200_steps(n, epochs, batch):
    hp = resolve(n)
    assert (hp["n_epochs"], hp["batch_size"]) == (epochs, batch)
    steps = hp["n_epochs"] * -(-n // batch)
    assert steps >= 200 or hp["n_epochs"] == 25


def test_classifier_min_steps_use_an_explicit_batch():
    assert resolve(100, Hyperparameters(batch_size=50))["n_epochs"] == 25  # 2 steps an epoch
    assert resolve(100, Hyperparameters(batch_size=4))["n_epochs"] == 8  # 25 steps an epoch


def test_a_small_causal_lm_gets_the_higher_lora_rate_and_a_large_one_keeps_2e4(tiny_llama):
    from worker.engine.hparams import model_parameters

    # The rate follows the base model's size, read from its config.json as prepare reads it.
    n_params = model_parameters(tiny_llama, task="causal_lm")
    assert n_params is not None and 0 < n_params < 1_000_000_000

    def rate(n_params, tuning_type="lora"):
        return resolve_hyperparameters(n_examples=100, task="causal_lm", tuning_type=tuning_type,
                                       requested=Hyperparameters(), training=Training(),
                                       n_params=n_params)["learning_rate"]

    assert rate(n_params) == rate(134_515_008) == rate(134_515_008, "qlora") == pytest.approx(1e-3)  # SmolLM2-135M
    assert rate(7_000_000_000) == rate(7_000_000_000, "qlora") == pytest.approx(2e-4)  # the QLoRA paper's
    assert rate(None) == pytest.approx(2e-4)  # size unknown: the conservative rate
    assert rate(134_515_008, "adapter") == 1e-3 and rate(134_515_008, "full") == 2e-5
    assert model_parameters(tiny_llama / "missing", task="causal_lm") is None
