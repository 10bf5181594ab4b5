"""Imbalanced classification: class weights for the loss, and a weighted sampler over the data.

- ``training.class_weights``: ``"balanced"`` gives each class n_examples / (n_classes * count), the
  usual inverse-frequency rule (a class half as frequent weighs twice as much); a map {label: weight}
  gives those weights, 1.0 for labels it leaves out. The loss is the weighted mean cross-entropy.
- ``training.sampler: "weighted"``: batches are drawn with replacement, each example with
  probability proportional to 1 / its class count, so every class is drawn about equally often. The
  draws are seeded by the job's seed and the epoch, so a resumed run replays the same order.
"""

from __future__ import annotations

from collections import Counter

import torch

from worker.engine.options import OptionError, check_class_weights  # noqa: F401 (OptionError: re-exported)


def class_weights(setting, *, labels: list[str], label_ids: list[int]) -> list[float] | None:
    """Per-label-id loss weights for ``setting`` (None, "balanced" or {label: weight})."""
    if setting is None:
        return None
    if setting == "balanced":
        counts = Counter(label_ids)
        n, k = len(label_ids), len(labels)
        return [n / (k * counts[i]) if counts[i] else 1.0 for i in range(k)]
    check_class_weights(setting, labels=labels)
    return [float(setting.get(label, 1.0)) for label in labels]


def weighted_cross_entropy(weights: list[float]):
    """A Trainer ``compute_loss_func``: the weighted mean cross-entropy of the micro-batch, scaled by
    its share of the accumulated batch (the Trainer does not rescale losses of a compute_loss_func)."""

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        weight = torch.tensor(weights, dtype=torch.float32, device=logits.device)
        value = torch.nn.functional.cross_entropy(logits.float(), labels, weight=weight)
        if num_items_in_batch is not None:
            value = value * labels.numel() / num_items_in_batch
        return value

    return loss


class WeightedClassSampler(torch.utils.data.Sampler):
    """len(label_ids) draws with replacement, probability ~ 1 / class count, seeded by seed + epoch."""

    def __init__(self, label_ids: list[int], *, seed: int) -> None:
        counts = Counter(label_ids)
        self.weights = torch.tensor([1.0 / counts[i] for i in label_ids], dtype=torch.double)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.weights)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        draws = torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator)
        return iter(draws.tolist())
