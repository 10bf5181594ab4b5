"""The classifier's baseline: a linear probe on the frozen base model's embeddings, on real text.

Real data: Debian fortunes topics (bench.real_data) embedded by the real all-MiniLM-L6-v2. Missing
data skips locally and fails under CI=true (CI installs both).
"""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
import torch

from hubtune.spec import Training, Tuning
from tests.engine.conftest import RecordingHooks
from testkit.real_data import real
from testkit.tiny_models import minilm_dir, write_jsonl
from worker.engine.data import Examples
from worker.engine.datasets import PadCollator, build_dataset
from worker.engine.evaluate import evaluation_record, majority_baseline
from worker.engine.methods import get_method
from worker.engine.probe import (
    fit_logistic_regression,
    linear_probe,
    penalised_loss,
    pooled_embeddings,
    probe_metrics,
    probe_sample,
    probe_weights,
)
from worker.engine.trainer import load_base_model, load_tokenizer, train

TOPICS = ("computers", "politics", "science")


def topic_rows(per_topic: int, *, seed: int) -> tuple[list[dict], list[dict]]:
    from bench.real_data import labelled_rows, split_rows

    rows = labelled_rows({t: per_topic for t in TOPICS}, seed=seed)
    return split_rows(rows, test_fraction=0.3, seed=seed)


@pytest.fixture(scope="module")
def minilm_lora():
    """(model, tokenizer): the real MiniLM with a fresh head and a LoRA, as a job builds it."""
    model_dir = real(minilm_dir)
    tokenizer = load_tokenizer(model_dir)
    model, new = load_base_model(model_dir, task="sequence_classification", labels=list(TOPICS), tokenizer=tokenizer)
    return get_method("lora").build(model, Tuning(), task="sequence_classification", modules_to_save=new), tokenizer


@pytest.fixture(scope="module")
def topics():
    return real(topic_rows, 45, seed=2)  # 94 train, 41 held out


def encode(rows, tokenizer):
    examples = Examples(task="sequence_classification", format="classification", rows=rows, labels=list(TOPICS))
    return build_dataset(examples, tokenizer=tokenizer, max_seq_length=128).features


def label_ids(rows) -> list[int]:
    return [TOPICS.index(r["label"]) for r in rows]


@pytest.fixture(scope="module")
def embedded(minilm_lora, topics):
    """The topic rows' MiniLM embeddings, computed once (the machine running the tests is small)."""
    model, tokenizer = minilm_lora
    pad = PadCollator(tokenizer.pad_token_id)
    train_rows, eval_rows = topics
    return tuple(pooled_embeddings(model, encode(rows, tokenizer), collator=pad, batch_size=32) for rows in topics)


def fit_score(x_train, train_ids, x_eval, eval_ids, weights=None) -> dict:
    fitted = fit_logistic_regression(x_train, torch.tensor(train_ids), n_classes=len(TOPICS), weights=weights)
    return probe_metrics(fitted, x_eval, eval_ids, labels=list(TOPICS))


def test_probe_is_deterministic_and_well_above_the_majority_class(minilm_lora, topics, embedded):
    model, tokenizer = minilm_lora
    train_rows, eval_rows = topics
    first, info = linear_probe(model, train_features=encode(train_rows, tokenizer),
                               eval_features=encode(eval_rows, tokenizer), labels=list(TOPICS), training=Training(),
                               collator=PadCollator(tokenizer.pad_token_id), batch_size=16, seed=5)
    # Embedded again in other batches and fitted again: the same baseline (a random head is not).
    again = fit_score(embedded[0], label_ids(train_rows), embedded[1], label_ids(eval_rows))
    majority = majority_baseline(train_label_ids=label_ids(train_rows), eval_label_ids=label_ids(eval_rows),
                                 labels=list(TOPICS))
    print("probe:", json.dumps(first), info, "majority:", majority["macro_f1"])
    assert first["accuracy"] == again["accuracy"] and first["macro_f1"] == pytest.approx(again["macro_f1"])
    assert first["valid_loss"] == pytest.approx(again["valid_loss"], rel=1e-6)
    assert info["examples"] == len(train_rows)
    assert set(first) == {"accuracy", "macro_f1", "recall_per_class", "valid_loss"}
    assert first["macro_f1"] > majority["macro_f1"] + 0.35  # measured 0.70 vs 0.17 (300 rows, seed 1)
    assert first["valid_loss"] < 1.0  # better than the uniform guess, log(3) = 1.10


def test_probe_on_shuffled_labels_scores_near_chance_on_held_out_data(topics, embedded):
    # Labels shuffled against the texts: nothing to learn, so held-out macro-F1 must stay near 1/3.
    # A probe that saw the evaluation split (or its labels) would score high here.
    train_rows, eval_rows = topics
    shuffled = label_ids(train_rows)
    random.Random(0).shuffle(shuffled)
    metrics = fit_score(embedded[0], shuffled, embedded[1], label_ids(eval_rows))
    print("shuffled probe:", metrics["macro_f1"])
    assert metrics["macro_f1"] < 0.5
    # ...while the same texts with their true labels are easy (the embeddings carry the topic).
    assert fit_score(embedded[0], label_ids(train_rows), embedded[1], label_ids(eval_rows))["macro_f1"] > 0.6


def test_balanced_weights_raise_the_minority_recall(topics, embedded):
    train_rows, eval_rows = topics
    ids = label_ids(train_rows)
    # Keep a few "science" examples in training: the minority class.
    keep = [i for i, label in enumerate(ids) if label != 2 or i % 4 == 0]
    x, y = embedded[0][keep], [ids[i] for i in keep]
    plain = fit_score(x, y, embedded[1], label_ids(eval_rows))
    weights = probe_weights(Training(class_weights="balanced"), labels=list(TOPICS), label_ids=y)
    balanced = fit_score(x, y, embedded[1], label_ids(eval_rows), weights)
    print("minority recall plain/balanced:", Counter(y), plain["recall_per_class"], balanced["recall_per_class"])
    assert balanced["recall_per_class"]["science"] > plain["recall_per_class"]["science"]


def test_logistic_regression_reaches_the_penalised_optimum():
    # The fit must be the minimum of scikit-learn's objective (C=1): its gradient there is zero.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 6, generator=g, dtype=torch.float64) * torch.tensor([1, 2, 3, 0.5, 1, 10.0]) + 3
    y = (x[:, 0] + 0.3 * x[:, 1] + torch.randn(120, generator=g, dtype=torch.float64) > 3).long()
    fitted = fit_logistic_regression(x, y, n_classes=2)
    assert fitted.iterations > 0
    w, b = fitted.weight.clone().requires_grad_(True), fitted.bias.clone().requires_grad_(True)
    penalised_loss(fitted.standardise(x), y, w, b, weights=torch.ones(120, dtype=torch.float64)).backward()
    assert w.grad.abs().max() < 1e-6 and b.grad.abs().max() < 1e-6
    assert (fitted.predict_proba(x).argmax(-1) == y).double().mean() > 0.8
    # The penalty binds: a weaker one (larger C) gives larger weights.
    assert fit_logistic_regression(x, y, n_classes=2, c=100.0).weight.norm() > fitted.weight.norm() * 1.1


def test_probe_sample_is_bounded_stratified_and_seeded():
    ids = [0] * 9000 + [1] * 900 + [2] * 100
    chosen = probe_sample(ids, limit=4000, seed=1)
    counts = Counter(ids[i] for i in chosen)
    assert counts == {0: 3600, 1: 360, 2: 40} and len(set(chosen)) == 4000
    assert probe_sample(ids, limit=4000, seed=1) == chosen != probe_sample(ids, limit=4000, seed=2)
    assert probe_sample([0, 1, 1], limit=4000, seed=1) == [0, 1, 2]
    assert Counter(ids[i] for i in probe_sample(ids, limit=10, seed=1))[2] == 1  # every label kept


def test_probe_weights_follow_the_jobs_imbalance_handling():
    ids = [0, 0, 0, 1]
    assert probe_weights(Training(), labels=["a", "b"], label_ids=ids) is None
    assert probe_weights(Training(class_weights="balanced"), labels=["a", "b"], label_ids=ids) == [4 / 6, 2.0]
    assert probe_weights(Training(sampler="weighted"), labels=["a", "b"], label_ids=ids) == [4 / 6, 2.0]
    assert probe_weights(Training(class_weights={"b": 3.0}), labels=["a", "b"], label_ids=ids) == [1.0, 3.0]


def test_beat_baseline_compares_with_the_probe_and_the_majority_class():
    def record(tuned, probe_f1, majority_f1=0.2):
        return evaluation_record(task="sequence_classification", split={"source": "held_out", "examples": 9, "fraction": 0.2},
                                 base={"macro_f1": probe_f1}, tuned={"macro_f1": tuned},
                                 majority={"macro_f1": majority_f1}, goal=None)

    assert record(0.8, 0.7)["beat_baseline"] is True
    assert record(0.8, 0.85)["beat_baseline"] is False  # below the probe: fine-tuning was not worth it
    assert record(0.8, 0.7, majority_f1=0.9)["beat_baseline"] is False
    assert record(0.8, 0.7)["base_kind"] == "linear_probe"


@pytest.mark.e2e
def test_a_job_reports_the_probe_as_its_base_and_times_it(tmp_path, topics, embedded, make_plan):
    train_rows, eval_rows = topics
    model_dir = minilm_dir()
    hp = {"n_epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "learning_rate_multiplier": 1.0}
    plan = make_plan(model_dir=model_dir, train_file=write_jsonl(tmp_path / "train.jsonl", train_rows),
                     valid_file=write_jsonl(tmp_path / "valid.jsonl", eval_rows), seed=5, tuning=Tuning(),
                     training=Training(max_seq_length=128), hyperparameters=hp)
    hooks = RecordingHooks()
    result = train(plan, hooks)
    ev = result.evaluation
    expected = fit_score(embedded[0], label_ids(train_rows), embedded[1], label_ids(eval_rows))
    timings = result.metrics["timings_s"]
    print("job:", json.dumps(ev), "timings:", timings)
    assert ev["base_kind"] == "linear_probe"
    # The job's base IS the probe, not a random head.
    assert ev["base"]["recall_per_class"] == expected.pop("recall_per_class")
    assert {k: ev["base"][k] for k in expected} == pytest.approx(expected)
    assert hooks.reports[0]["data"]["probe"]["examples"] == len(train_rows)
    assert "linear probe on the base model's embeddings: macro_f1" in hooks.reports[0]["message"]
    assert "for the linear probe on the base model's embeddings" in hooks.reports[-1]["message"]
    assert timings["probe_s"] > 0 and "baseline_eval_s" not in timings
