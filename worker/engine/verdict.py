"""What a job's evaluation means for its user: the warnings of an unreliable split and of a model that
does not beat its baselines, in the words the events, the job result and the model card carry.

The job result's flag (``job.result["warnings"]``, visible through GET /v1/fine_tuning/jobs/{id} and
shown as a badge by the dashboard) is a list of ``{"code", "message"}``:

- ``below_baseline``: the tuned model's primary metric is not better than every baseline's on the
  evaluation split (``evaluation["beat_baseline"]`` False). The job still succeeds: a goal
  (``training.goal``) is reported, not enforced, as before.
- ``unreliable_evaluation``: the split has fewer than 20 examples or 5 of some label
  (worker.engine.holdout), so the verdict rests on a handful of examples.

A list, not one field, because both can hold at once and a later check adds a code, not a field.
"""

from __future__ import annotations

from worker.engine.evaluate import BASELINE_NAMES

BELOW_BASELINE = "below_baseline"
UNRELIABLE_EVALUATION = "unreliable_evaluation"

# The advice is what moved the runs off the majority class: 1e-3 instead of 2e-4 took a LoRA
# classifier from macro-F1 0.12 to 0.48, and 3 epochs instead of 2 took the SMS set from 0.46 to 0.97.
ADVICE = {"macro_f1": "try more epochs or a higher learning rate, or check that the labels fit the text",
          "valid_loss": "try more epochs or a higher learning rate, or check the data"}


def split_warnings(split: dict, valid=None) -> list[str]:
    """prepare's data report warnings for the evaluation split (and the validation file's own notes)."""
    warnings = [f"validation_file: {note}" for note in (valid.notes if valid is not None else [])]
    if split.get("reliable") is False:
        warnings.append(f"the evaluation is unreliable: {split['unreliable_reason']}")
    return warnings


def reliability_note(evaluation: dict) -> str:
    """'; unreliable: only 6 held-out examples ...' to append to the final evaluation message."""
    split = evaluation.get("split") or {}
    if split.get("reliable") is False:
        return f"; unreliable: {split['unreliable_reason']}"
    return ""


def quality_warnings(evaluation: dict | None) -> list[dict]:
    """The job result's ``warnings`` for a final evaluation record (none without one)."""
    if not evaluation:
        return []
    warnings = []
    split = evaluation.get("split") or {}
    if evaluation.get("beat_baseline") is False:
        warnings.append({"code": BELOW_BASELINE, "message": below_baseline_message(evaluation)})
    if split.get("reliable") is False:
        warnings.append({"code": UNRELIABLE_EVALUATION,
                         "message": f"The evaluation is unreliable: {split['unreliable_reason']}."})
    return warnings


def below_baseline_message(evaluation: dict) -> str:
    primary = evaluation["primary_metric"]
    split = evaluation.get("split") or {}
    where = {"held_out": "the held-out split", "validation_file": "the validation file",
             "training_file": "the training file"}.get(split.get("source"), "the evaluation split")
    tuned = evaluation["tuned"][primary]
    against = []
    if evaluation.get("majority_baseline"):
        against.append(f"{evaluation['majority_baseline'][primary]:.4g} for the majority class")
    if evaluation.get("base"):
        kind = BASELINE_NAMES.get(evaluation.get("base_kind", "base_model"), "base model")
        against.append(f"{evaluation['base'][primary]:.4g} for the {kind}")
    text = (f"The fine-tuned model does not beat its baselines on {where}: {primary} {tuned:.4g} vs "
            f"{' and '.join(against)}; {ADVICE.get(primary, ADVICE['valid_loss'])}")
    if split.get("reliable") is False:
        text += f" (this rests on only {split.get('examples')} examples)"
    return text + "."
