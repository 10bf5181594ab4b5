"""The model card's DPO section: beta, the base model as reference, base vs tuned preference accuracy on
the held-out pairs, and trl's rewards at the last training step and evaluation."""

from __future__ import annotations

from huggingface_hub import ModelCard

from plugin import render_model_card
from plugin.modelcard import dpo_section

EVALUATION = {"split": {"source": "validation_file", "examples": 16}, "primary_metric": "preference_accuracy",
              "base": {"preference_accuracy": 0.125, "logprob_margin": -9.5, "pairs": 16},
              "tuned": {"preference_accuracy": 0.75, "logprob_margin": 4.25, "pairs": 16},
              "base_kind": "base_model", "majority_baseline": None, "beat_baseline": True, "goal": None, "samples": []}
CURVE = [
    {"step": 1, "train_loss": 0.69, "train_rewards_chosen": 0.0, "train_rewards_rejected": 0.0,
     "train_rewards_margin": 0.0, "train_preference_accuracy": 0.0},
    {"step": 10, "train_loss": 0.31, "train_rewards_chosen": 0.8, "train_rewards_rejected": -0.4,
     "train_rewards_margin": 1.2, "train_preference_accuracy": 1.0, "valid_loss": 0.4,
     "valid_rewards_chosen": 0.6, "valid_rewards_rejected": -0.2, "valid_rewards_margin": 0.8,
     "valid_preference_accuracy": 0.875},
]


def test_dpo_section_reports_base_vs_tuned_and_the_last_rewards():
    title, text = dpo_section(hyperparameters={"beta": 0.1, "n_epochs": 2}, evaluation=EVALUATION, curve=CURVE)
    assert title == "Preference tuning (DPO)"
    assert "beta = 0.1" in text and "reference model is the base model" in text
    assert "| base model | 0.125 | -9.5 |" in text and "| fine-tuned | 0.75 | 4.25 |" in text
    assert "| reward margin | 1.2 | 0.8 |" in text and "| preference accuracy | 1 | 0.875 |" in text


def test_the_card_with_a_dpo_section_parses_as_a_model_card():
    card = render_model_card(
        repo_id="alice/smollm2-dpo", base_model="HuggingFaceTB/SmolLM2-135M-Instruct", base_model_revision="abc",
        task="causal_lm", tuning={"type": "lora", "r": 8}, hyperparameters={"beta": 0.1}, datasets=[], metrics={},
        evaluation=EVALUATION, sections=[dpo_section(hyperparameters={"beta": 0.1}, evaluation=EVALUATION,
                                                     curve=CURVE)])
    parsed = ModelCard(card)
    assert "## Preference tuning (DPO)" in parsed.text
    results = parsed.data.to_dict()["model-index"][0]["results"]
    assert any(m["type"] == "preference_accuracy" and m["value"] == 0.75
               for r in results for m in r["metrics"]), results
