"""DPO's "auto" hyperparameters (worker/engine/hparams.py): beta 0.1, a tenth of the supervised rate unless
training.learning_rate names one, the multiplier applied on top, and no learning-rate search."""

from __future__ import annotations

import pytest

from hubtune.spec import DpoHyperparameters, Training
from worker.engine.hparams import resolve_dpo_hyperparameters, resolve_hyperparameters


def resolve(requested: DpoHyperparameters, training: Training = Training()) -> dict:
    sft = resolve_hyperparameters(n_examples=40, task="causal_lm", tuning_type="lora", requested=requested,
                                  training=training, n_params=134_515_008)
    return resolve_dpo_hyperparameters(sft, requested, training)


def test_auto_dpo_is_beta_point_one_at_a_tenth_of_the_supervised_rate_without_search():
    hp = resolve(DpoHyperparameters())
    assert hp["beta"] == 0.1 and hp["learning_rate"] == pytest.approx(1e-4)  # SFT's 1e-3 for a 135M LoRA
    assert hp["learning_rate_search"] is False
    assert (hp["n_epochs"], hp["batch_size"]) == (3, 4)  # the supervised rules for 40 examples


def test_explicit_values_are_kept_and_the_multiplier_scales_the_dpo_rate():
    hp = resolve(DpoHyperparameters(beta=0.5, n_epochs=2, batch_size=8, learning_rate_multiplier=5))
    assert (hp["beta"], hp["n_epochs"], hp["batch_size"]) == (0.5, 2, 8)
    assert hp["learning_rate"] == pytest.approx(5e-4)
    assert resolve(DpoHyperparameters(), Training(learning_rate=3e-5))["learning_rate"] == pytest.approx(3e-5)
