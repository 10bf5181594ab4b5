"""Imbalanced classification: class weights, the weighted sampler, and the metrics that show them."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from hubtune.spec import Training, Tuning
from tests.engine.conftest import RecordingHooks
from testkit.tiny_models import FILLER, write_jsonl
from worker.engine.metrics import classification_metrics
from worker.engine.sampling import OptionError, WeightedClassSampler, class_weights, weighted_cross_entropy
from worker.engine.plan import TrainPlan
from worker.engine.trainer import train


def test_metrics_macro_f1_and_recall():
    labels = ["a", "b", "c"]
    m = classification_metrics(predictions=[0, 0, 0, 0, 1, 2], targets=[0, 0, 0, 1, 1, 1], labels=labels)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["recall_per_class"] == {"a": 1.0, "b": pytest.approx(1 / 3)}  # "c" never occurs
    f1_a, f1_b = 2 * 0.75 * 1 / 1.75, 2 * 1 * (1 / 3) / (4 / 3)
    assert m["macro_f1"] == pytest.approx((f1_a + f1_b) / 2)


def test_balanced_weights_are_inverse_frequency():
    weights = class_weights("balanced", labels=["common", "rare"], label_ids=[0] * 90 + [1] * 10)
    assert weights == pytest.approx([100 / (2 * 90), 100 / (2 * 10)])
    assert class_weights({"rare": 4.0}, labels=["common", "rare"], label_ids=[0, 1]) == [1.0, 4.0]
    assert class_weights(None, labels=["a", "b"], label_ids=[0, 1]) is None


def test_unknown_label_in_class_weights_names_it():
    with pytest.raises(OptionError) as info:
        class_weights({"rare": 2.0, "typo": 3.0}, labels=["common", "rare"], label_ids=[0, 1])
    assert info.value.param == "training.class_weights.typo"
    assert "'typo'" in str(info.value) and "common, rare" in str(info.value)


def test_weighted_loss_is_the_weighted_mean():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    loss = weighted_cross_entropy([1.0, 3.0])({"logits": logits}, labels)
    each = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert loss.item() == pytest.approx(((each[0] + 3 * each[1] + 3 * each[2]) / 7).item())


def test_weighted_sampler_balances_and_is_seeded():
    ids = [0] * 95 + [1] * 5
    sampler = WeightedClassSampler(ids, seed=3)
    draws = [ids[i] for epoch in range(20) for i in (sampler.set_epoch(epoch), list(sampler))[1]]
    share = Counter(draws)[1] / len(draws)
    assert 0.4 < share < 0.6  # about half the draws are the 5% class
    again = WeightedClassSampler(ids, seed=3)
    again.set_epoch(7)
    sampler.set_epoch(7)
    assert list(again) == list(sampler)  # same seed and epoch: same order (what resume relies on)
    sampler.set_epoch(8)
    assert list(again) != list(sampler)


# ---------------------------------------------------------------------------------------------
# A 95/5 learnable task: the rare class has the keyword "great", the common one only filler words.


def imbalanced_rows(n_rare: int, n_common: int, *, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n_rare + n_common):
        rare = i < n_rare
        words = rng.sample(FILLER, 4)
        words.insert(rng.randrange(5), "great" if rare else rng.choice(FILLER))
        rows.append({"text": " ".join(words), "label": "rare" if rare else "common"})
    rng.shuffle(rows)
    return rows


STEPS, BATCH = 45, 32


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory, tiny_bert):
    tmp = tmp_path_factory.mktemp("imbalanced")
    train_file = write_jsonl(tmp / "train.jsonl", imbalanced_rows(10, 190, seed=0))
    valid_file = write_jsonl(tmp / "valid.jsonl", imbalanced_rows(20, 20, seed=1))  # balanced: recall is clear

    def run(name: str, **options):
        training = Training(learning_rate=1e-2, max_steps=STEPS, save_steps=1000, **options)
        plan = TrainPlan.in_folder(  # a module-scoped fixture: the function-scoped make_plan is not available
            tmp / name, task="sequence_classification", model_dir=tiny_bert, train_file=train_file,
            valid_file=valid_file, seed=1, tuning=Tuning(dropout=0.0), training=training, n_epochs=100,
            batch_size=BATCH,
        )
        return train(plan, RecordingHooks())

    return {name: run(name, **options) for name, options in (
        ("neither", {}), ("class_weights", {"class_weights": "balanced"}), ("sampler", {"sampler": "weighted"}),
    )}


def test_minority_recall_improves_with_class_weights_or_sampler(imbalanced):
    recall = {name: r.evaluation["tuned"]["recall_per_class"]["rare"] for name, r in imbalanced.items()}
    f1 = {name: r.evaluation["tuned"]["macro_f1"] for name, r in imbalanced.items()}
    print(f"rare-class recall after {STEPS} steps: {recall}; macro_f1: {f1}")
    assert all(r.steps == STEPS for r in imbalanced.values())
    assert recall["neither"] <= 0.2  # plain cross-entropy learns to answer "common"
    assert recall["class_weights"] >= recall["neither"] + 0.4
    assert recall["sampler"] >= recall["neither"] + 0.4
    assert f1["class_weights"] > f1["neither"] and f1["sampler"] > f1["neither"]
    # Every run reports the same majority baseline: always "common".
    majority = imbalanced["neither"].evaluation["majority_baseline"]
    assert majority["recall_per_class"] == {"common": 1.0, "rare": 0.0} and majority["accuracy"] == 0.5


def test_resume_with_sampler_and_class_weights_continues_the_same_curve(tmp_path, tiny_bert, make_plan):
    """An interrupted run resumed from its checkpoint gives the uninterrupted loss curve: weights,
    optimizer, scheduler, RNG and the weighted sampler's position are all restored."""
    train_file = write_jsonl(tmp_path / "train.jsonl", imbalanced_rows(4, 28, seed=2))

    def run(name: str, *, stop_at=None, resume_from: Path | None = None):
        training = Training(learning_rate=1e-2, save_steps=3, sampler="weighted", class_weights="balanced",
                            validation_split=0.0)
        plan = make_plan(tmp_path / name, model_dir=tiny_bert, train_file=train_file, seed=4,
                         tuning=Tuning(dropout=0.1), training=training, resume_from=resume_from,
                         n_epochs=2, batch_size=8)
        hooks = RecordingHooks(stop_at=stop_at)
        return hooks, train(plan, hooks)

    whole, result = run("whole")
    assert result.steps == 8
    first, _ = run("first", stop_at=5)  # stops inside the second epoch, mid-way through the sampler's draws
    checkpoint = first.checkpoints[-1]["path"]
    assert checkpoint.name == "checkpoint-5"
    rest, resumed = run("rest", resume_from=checkpoint)
    assert resumed.steps == 8
    assert first.train_losses + rest.train_losses == pytest.approx(whole.train_losses, abs=1e-6)
