"""A DPO step's event reads like the others, with the preference accuracy and reward margin after the losses."""

from __future__ import annotations

from hubtune.step_events import step_message


def test_dpo_step_message_names_preference_accuracy_and_margin():
    metrics = {"step": 10, "train_loss": 0.208, "train_preference_accuracy": 0.75, "train_rewards_margin": 1.25,
               "train_rewards_chosen": 0.5, "valid_loss": 0.1881, "valid_preference_accuracy": 0.6875,
               "valid_rewards_margin": 0.9}
    assert step_message(metrics, total_steps=20) == (
        "Step 10/20: training loss=0.208, validation loss=0.1881, preference accuracy=0.75, reward margin=1.25, "
        "validation preference accuracy=0.6875, validation reward margin=0.9")
    # A supervised step is worded as before.
    assert step_message({"step": 3, "train_loss": 0.5}, total_steps=20) == "Step 3/20: training loss=0.5"
