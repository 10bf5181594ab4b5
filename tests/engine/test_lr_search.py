"""The learning-rate search for an "auto" rate (worker.engine.lr_search), on real fortunes topics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hubtune.spec import Hyperparameters, Training, Tuning
from tests.engine.conftest import RecordingHooks
from testkit.real_data import real
from worker.engine.hparams import resolve_hyperparameters
from worker.engine.lr_search import (
    DEFAULT_FACTORS,
    MIN_RUNG_STEPS,
    RECORD_FILE,
    SHORT_FACTORS,
    learning_rate_search,
    rung_plan,
    skip_reason,
    step_units,
    survivors_per_rung,
)
from worker.engine.trainer import TRAINING_INFO_FILE, TrainPlan, train

TOPICS = ("computers", "food", "politics")
from worker.engine.hparams import CLASSIFICATION_LEARNING_RATES

BASE_RATE = CLASSIFICATION_LEARNING_RATES["lora"]  # the classifier's calibrated "auto" rate


def _fortunes_file(path: Path, per_topic: int) -> Path:
    from bench.real_data import labelled_rows

    rows = real(labelled_rows, {t: per_topic for t in TOPICS}, seed=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _plan(tmp: Path, model_dir: Path, *, per_topic=30, n_epochs=3, batch_size=8, training=None, requested=None,
          tuning=None, options=None, resume_from=None) -> TrainPlan:
    train_file = _fortunes_file(tmp / "train.jsonl", per_topic)
    training = training or Training(logging_steps=1, max_seq_length=32, lr_scheduler="constant")
    requested = requested or Hyperparameters(n_epochs=n_epochs, batch_size=batch_size)
    tuning = tuning or Tuning(dropout=0.0)
    hp = resolve_hyperparameters(n_examples=per_topic * 3, task="sequence_classification", tuning_type=tuning.type,
                                 requested=requested, training=training)
    return TrainPlan.in_folder(tmp, task="sequence_classification", model_dir=model_dir, train_file=train_file,
                               seed=1, tuning=tuning, training=training, hyperparameters=hp,
                               search_options={"min_rung_steps": 4} if options is None else options,
                               resume_from=resume_from)


def _searches(hooks: RecordingHooks) -> list[dict]:
    return [r for r in hooks.reports if r["stage"] == "search"]


def test_rungs_halve_and_cost():
    assert survivors_per_rung(5) == [5, 2]
    assert survivors_per_rung(8) == [8, 4, 2]
    assert survivors_per_rung(2) == [2]
    assert step_units([5, 2]) == 7  # 5 x r, then 2 on from r to 2r
    assert step_units([8, 4, 2]) == 8 + 4 + 2 * 2


def test_short_runs_race_fewer_candidates():
    def fit(planned, slice_batches=2):
        return rung_plan(planned=planned, slice_batches=slice_batches, accumulation=1,
                         factor_sets=[DEFAULT_FACTORS, SHORT_FACTORS], min_rung_steps=4, budget_fraction=0.3)

    # 300 planned steps: four candidates, 14 steps each, the best two on to 28.
    assert fit(300) == (DEFAULT_FACTORS, [4, 2], 14)
    # A 108-step run: four candidates get 4 steps each
    # (30 % of 108 = 32.4, less 6 slice evaluations of 2 batches at 1/3 of a step, over 4 + 2 units).
    assert fit(108) == (DEFAULT_FACTORS, [4, 2], 4)
    # 90 steps: four would get 3 each; three get 8 (27 less 3 evaluations of 2 batches, over 3 units).
    assert fit(90) == (SHORT_FACTORS, [3], 8)
    # 20 steps: not even three candidates get 8 steps: no search.
    assert fit(20) is None


def test_the_default_keeps_its_place_unless_a_candidate_wins_by_more_than_one_slice_example():
    from worker.engine.lr_search import _keep_default

    rung = [{"learning_rate": 1e-3, "metric": 0.78}, {"learning_rate": 3e-3, "metric": 0.89},
            {"learning_rate": 3.3e-4, "metric": 0.33}]
    # 9 slice examples: 0.11 is one example's worth; 0.78 -> 0.89 is within it, the default stays.
    assert _keep_default(rung, 3e-3, default=1e-3, task="sequence_classification", slice_examples=9) == 1e-3
    # On 20 examples (0.05 each) the same gain is two examples: the candidate wins.
    assert _keep_default(rung, 3e-3, default=1e-3, task="sequence_classification", slice_examples=20) == 3e-3
    # A default knocked out in an earlier rung, or a causal LM's loss, leaves the best candidate.
    assert _keep_default(rung[1:], 3e-3, default=1e-3, task="sequence_classification", slice_examples=9) == 3e-3
    assert _keep_default(rung, 3e-3, default=1e-3, task="causal_lm", slice_examples=9) == 3e-3


def test_with_the_default_rung_length_a_100_to_340_step_run_skips_and_a_long_one_searches():
    # MIN_RUNG_STEPS (25): the bench's classifier runs (small 105, multiclass 116, binary 171, medium
    # 339 steps) gave noisy or start-speed rankings, so they train at the calibrated default.
    def fit(planned):
        return rung_plan(planned=planned, slice_batches=2, accumulation=1,
                         factor_sets=[DEFAULT_FACTORS, SHORT_FACTORS], min_rung_steps=MIN_RUNG_STEPS,
                         budget_fraction=0.3)

    assert [fit(p) for p in (105, 116, 171, 339)] == [None] * 4
    assert fit(600) == (DEFAULT_FACTORS, [4, 2], 29)


def test_hparams_key_follows_auto():
    def key(requested=Hyperparameters(), training=Training()):
        return resolve_hyperparameters(n_examples=50, task="causal_lm", tuning_type="lora", requested=requested,
                                       training=training)["learning_rate_search"]

    assert key() is True
    assert key(Hyperparameters(learning_rate_multiplier=2)) is False
    assert key(training=Training(learning_rate=1e-3)) is False


@pytest.mark.e2e  # the real MiniLM: ~60 optimizer steps on CPU
def test_the_search_picks_the_rate_that_learns_and_the_main_run_uses_it(tmp_path, minilm):
    # 1e-7 moves nothing; 5e-3 learns the topics: the search must pick 5e-3 and train with it.
    plan = _plan(tmp_path, minilm, per_topic=20, n_epochs=8,  # 45 rows train after the held-out 15: 48 steps
                 options={"factors": [1e-7 / BASE_RATE, 5e-3 / BASE_RATE], "min_rung_steps": 3})
    hooks = RecordingHooks()
    result = train(plan, hooks)
    search = result.search
    assert search["ran"] and search["chosen"] == pytest.approx(5e-3)
    assert [t["learning_rate"] for t in search["trials"]] == pytest.approx([1e-7, 5e-3])
    assert search["trial_steps"] <= 0.30 * search["planned_steps"]
    assert search["planned_steps"] == hooks.started["total_steps"] == result.steps
    # The main run trained at the chosen rate (constant schedule: every step's rate is it).
    rates = [m["learning_rate"] for m in hooks.metrics if "learning_rate" in m]
    assert rates and rates == pytest.approx([5e-3] * len(rates))
    info = json.loads((plan.output_dir / TRAINING_INFO_FILE).read_text())
    assert info["hyperparameters"]["learning_rate"] == pytest.approx(5e-3)
    (event,) = _searches(hooks)
    assert "-> 0.005" in event["message"] and event["data"]["chosen"] == search["chosen"]
    assert json.loads((plan.checkpoints_dir / RECORD_FILE).read_text())["chosen"] == search["chosen"]
    # The evaluation split is not the search slice: the held-out examples are what they were.
    assert result.evaluation["split"]["source"] == "held_out"


def test_default_budget_stays_within_30_percent(tmp_path, tiny_bert):
    # 7 epochs: with the held-out split (15 of 90) and the slice's evaluations, 30 % gives each candidate 4+ steps.
    plan = _plan(tmp_path, tiny_bert, per_topic=30, n_epochs=7, batch_size=4)
    result = train(plan, RecordingHooks())
    search = result.search
    assert search["ran"], search
    assert len(search["candidates"]) == 4 and search["rung_steps"][0] >= 4
    assert search["trial_steps"] <= 0.30 * search["planned_steps"]
    assert search["trial_steps"] == 4 * search["rung_steps"][0] + 2 * search["rung_steps"][0]


def test_a_short_run_skips_with_the_reason(tmp_path, tiny_bert):
    plan = _plan(tmp_path, tiny_bert, per_topic=10, n_epochs=2, batch_size=4)
    hooks = RecordingHooks()
    result = train(plan, hooks)
    assert result.search["ran"] is False and "too short" in result.search["reason"]
    (event,) = _searches(hooks)  # "auto" was asked for: the user hears why it did not run
    assert event["message"].startswith("Learning-rate search skipped: the planned run is too short")
    assert result.steps == hooks.started["total_steps"] and not (plan.checkpoints_dir / RECORD_FILE).exists()


def test_an_explicit_rate_skips_the_search(tmp_path, tiny_bert):
    plan = _plan(tmp_path, tiny_bert, per_topic=30, n_epochs=2, batch_size=4,
                 requested=Hyperparameters(n_epochs=2, batch_size=4, learning_rate_multiplier=5),
                 options={"min_rung_steps": 1})  # a search could run: only the explicit rate stops it
    hooks = RecordingHooks()
    result = train(plan, hooks)
    assert result.search == {"ran": False, "reason": result.search["reason"]}
    assert "learning rate was given" in result.search["reason"]
    assert _searches(hooks) == []
    assert plan.hyperparameters["learning_rate"] == pytest.approx(5 * BASE_RATE)


def test_skip_rules(tmp_path, tiny_bert):
    plan = _plan(tmp_path, tiny_bert)
    assert skip_reason(plan, trainable=1000, planned=100) is None
    assert "full" in skip_reason(_plan(tmp_path, tiny_bert, tuning=Tuning(type="full")), trainable=1000, planned=100)
    assert "trainable parameters" in skip_reason(plan, trainable=60_000_000, planned=100)
    assert "3,000" in skip_reason(plan, trainable=1000, planned=5000)
    plan.training = Training(n_gpus=2)
    assert "distributed" in skip_reason(plan, trainable=1000, planned=100)
    plan.hyperparameters.pop("learning_rate_search")  # a plan made before the search existed
    assert "does not ask" in skip_reason(plan, trainable=1000, planned=100)


def test_the_main_run_starts_from_the_same_weights(tmp_path, tiny_bert):
    # A run after a search equals a run without one at the chosen rate: the search restored the initial
    # trainable weights and re-seeded, so the main run is what it would have been.
    searched = _plan(tmp_path / "a", tiny_bert, per_topic=30, n_epochs=3, batch_size=4, options={"min_rung_steps": 1})
    result = train(searched, RecordingHooks())
    assert result.search["ran"]
    plain = _plan(tmp_path / "b", tiny_bert, per_topic=30, n_epochs=3, batch_size=4, options={"min_rung_steps": 1})
    plain.hyperparameters.update(result.search["hyperparameters"], learning_rate_search=False)
    again = train(plain, RecordingHooks())
    assert again.search["ran"] is False
    flat = [[x for row in r.reference["logits"] for x in row] for r in (again, result)]
    assert flat[0] == pytest.approx(flat[1], abs=1e-5)
    assert again.metrics["train_loss"] == pytest.approx(result.metrics["train_loss"], abs=1e-5)


def test_the_search_restores_the_trainable_weights(tmp_path, tiny_bert):
    from worker.engine.datasets import PadCollator, build_dataset
    from worker.engine.data import load_examples
    from worker.engine.methods import get_method
    from worker.engine.trainer import load_base_model, load_tokenizer

    plan = _plan(tmp_path, tiny_bert, per_topic=30, n_epochs=3, batch_size=4, options={"min_rung_steps": 1})
    examples = load_examples(plan.train_file, task=plan.task, param="training_file")
    tokenizer = load_tokenizer(tiny_bert)
    model, new = load_base_model(tiny_bert, task=plan.task, labels=examples.labels, tokenizer=tokenizer)
    model = get_method("lora").build(model, plan.tuning, task=plan.task, modules_to_save=new)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    ds = build_dataset(examples, tokenizer=tokenizer, max_seq_length=32)
    pad = PadCollator(tokenizer.pad_token_id)
    record = learning_rate_search(plan, RecordingHooks(), model=model, train_ds=ds, collator=pad, eval_collator=pad,
                                  labels=examples.labels, class_weights=None, trainable=1000)
    assert record["ran"] and record["trials"]
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.detach(), before[name]), name


def test_resume_reuses_the_recorded_choice(tmp_path, tiny_bert):
    plan = _plan(tmp_path, tiny_bert, resume_from=tmp_path / "checkpoints" / "checkpoint-4")
    saved = {"ran": True, "chosen": 7e-4, "hyperparameters": {"learning_rate": 7e-4, "learning_rate_multiplier": 3.5},
             "trials": []}
    plan.checkpoints_dir.mkdir(parents=True)
    (plan.checkpoints_dir / RECORD_FILE).write_text(json.dumps(saved))
    hooks = RecordingHooks()
    # No model or data is touched on a resume: the recorded choice is applied as it was.
    record = learning_rate_search(plan, hooks, model=None, train_ds=None, collator=None, eval_collator=None,
                                  labels=[], class_weights=None, trainable=0)
    assert record == {**saved, "reused": True}
    assert plan.hyperparameters["learning_rate"] == 7e-4 and hooks.reports == []


def test_a_stop_during_the_search_stops_training(tmp_path, tiny_bert):
    plan = _plan(tmp_path, tiny_bert, per_topic=30, n_epochs=3, batch_size=4, options={"min_rung_steps": 1})
    hooks = RecordingHooks(stop_at=3)
    result = train(plan, hooks)
    assert result.stopped and result.steps == 0 and result.search["stopped"]
    assert hooks.started is None and not plan.output_dir.exists()
    assert not (plan.checkpoints_dir / RECORD_FILE).exists()  # a resume (none: no checkpoint) searches again


def test_the_model_card_says_what_was_tried_and_chosen():
    from plugin import render_model_card
    from plugin.modelcard import learning_rate_search_section, searched_hyperparameters

    search = {"ran": True, "metric": "macro_f1", "slice_examples": 12, "candidates": [1e-4, 2e-4, 4e-4],
              "trials": [{"learning_rate": 1e-4, "rung": 1, "steps": 4, "metric": 0.2, "loss": 1.1},
                         {"learning_rate": 4e-4, "rung": 1, "steps": 4, "metric": 0.6, "loss": 0.9}],
              "chosen": 4e-4, "hyperparameters": {"learning_rate": 4e-4, "learning_rate_multiplier": 2.0},
              "trial_steps": 8, "planned_steps": 60, "seconds": 3.25}
    assert learning_rate_search_section({"ran": False, "reason": "x"}) is None
    hp = searched_hyperparameters({"n_epochs": 3, "learning_rate": 2e-4, "learning_rate_multiplier": 1.0}, search)
    card = render_model_card(repo_id="me/model", base_model="org/base", base_model_revision=None,
                             task="sequence_classification", tuning={"type": "lora"}, hyperparameters=hp,
                             datasets=[], metrics={}, sections=[learning_rate_search_section(search)])
    section = card.split("## Learning-rate search\n", 1)[1]
    assert "12 held-back training examples" in section and "Chosen: 0.0004" in section
    assert "8 trial steps for a run of 60, 3.25 s" in section
    assert "| 0.0001 | 1 | 4 | 0.2 | 1.1 |" in section
    assert "| learning_rate | 0.0004 |" in card  # the configuration shows the rate the run trained with
