"""The quality bench's own parts: its metric code and its train/test split (fast, no model)."""

from __future__ import annotations

import pytest

from bench.quality_metrics import accuracy, macro_f1, majority_macro_f1
from bench.real_data import train_test_rows
from testkit.real_data import real


def test_macro_f1_averages_each_class():
    gold = ["a", "a", "a", "b"]
    pred = ["a", "a", "b", "b"]
    # a: tp 2 fp 0 fn 1 -> 0.8; b: tp 1 fp 1 fn 0 -> 2/3
    assert macro_f1(gold, pred) == pytest.approx((0.8 + 2 / 3) / 2)
    assert accuracy(gold, pred) == 0.75


def test_majority_baseline_scores_only_its_class():
    # always "a": a's F1 = 2*3/(2*3+1) = 6/7, b's 0
    assert majority_macro_f1(["a", "a", "b"], ["a", "a", "a", "b"]) == pytest.approx(3 / 7)


def test_train_and_test_never_share_a_text():
    train, test = real(train_test_rows, {"food": 50, "law": 20}, {"food": 40, "law": 10}, seed=3,
                                  relabel={"law": "other"})
    assert {r["text"] for r in train}.isdisjoint(r["text"] for r in test)
    assert sorted({r["label"] for r in train}) == ["food", "other"]
    assert [sum(r["label"] == lab for r in test) for lab in ("food", "other")] == [40, 10]
