"""Classification metrics computed from predicted and true label ids (no sklearn needed).

``accuracy``; ``macro_f1`` (the unweighted mean of each class's F1, so a minority class counts as
much as the majority); ``recall_per_class`` ({label: recall}; a class absent from the evaluated set
is left out, since its recall is undefined and F1 likewise ignores it).
"""

from __future__ import annotations

from collections import Counter


def classification_metrics(*, predictions: list[int], targets: list[int], labels: list[str]) -> dict:
    if len(predictions) != len(targets):
        raise ValueError("predictions and targets differ in length")
    n = len(targets)
    correct = sum(p == t for p, t in zip(predictions, targets))
    recall: dict[str, float] = {}
    f1s: list[float] = []
    true_counts, predicted_counts = Counter(targets), Counter(predictions)
    for index, label in enumerate(labels):
        if not true_counts[index]:
            continue
        hits = sum(1 for p, t in zip(predictions, targets) if p == t == index)
        r = hits / true_counts[index]
        p = hits / predicted_counts[index] if predicted_counts[index] else 0.0
        recall[label] = r
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return {
        "accuracy": correct / n if n else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "recall_per_class": recall,
    }


def majority_label(label_ids: list[int]) -> int:
    """The most frequent label id (ties go to the smaller id, so the choice is deterministic)."""
    counts = Counter(label_ids)
    return min(counts, key=lambda label: (-counts[label], label))
