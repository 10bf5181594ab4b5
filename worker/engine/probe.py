"""The classifier's "base model" baseline: a linear probe on the frozen base model's embeddings.

A freshly initialised classification head scores whatever its random seed gives (0.17 macro-F1 in
one run, 0.67 in the next on the same data), so it says nothing about the base model. What
practitioners compare a fine-tune with instead is a linear probe: logistic regression on the base
model's sentence embeddings, fitted on the training split and scored on the evaluation split. If
fine-tuning does not beat that, a frozen encoder plus a linear classifier would have done.

- Embeddings: the mean over non-padding tokens of the last hidden state (the sentence-transformers
  pooling of all-MiniLM-L6-v2), from the built model before any optimizer step: a LoRA starts at
  zero, so it *is* the base model; other methods are probed before training as well.
- Fit: multinomial logistic regression on standardised features, L2 penalty as scikit-learn's
  default (C = 1.0, intercept not penalised), L-BFGS in float64 torch (no scikit-learn dependency).
- Class weights follow the job's imbalance handling: ``training.class_weights`` as the fine-tune
  uses them; ``sampler: "weighted"`` (each class drawn equally often) as "balanced" weights, which
  is the same re-weighting in expectation. Otherwise unweighted, like the fine-tune's loss.
- Cost bound: at most MAX_PROBE_EXAMPLES training examples are embedded (a seeded stratified
  sample beyond that), in batches.

Metrics come from ``worker.engine.metrics.classification_metrics``, plus ``valid_loss``: the plain
cross-entropy of the probe's probabilities on the evaluation split (as for the fine-tuned model).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import torch

from worker.engine.metrics import classification_metrics
from worker.engine.sampling import class_weights

MAX_PROBE_EXAMPLES = 4000
L2_C = 1.0  # scikit-learn LogisticRegression's default inverse regularisation strength
MAX_LBFGS_ITERATIONS = 500


def probe_sample(label_ids: list[int], *, limit: int = MAX_PROBE_EXAMPLES, seed: int) -> list[int]:
    """Indices of at most ``limit`` examples, stratified by label (each label keeps its share and at
    least one example), drawn by a generator seeded with ``seed``; all of them when they fit."""
    if len(label_ids) <= limit:
        return list(range(len(label_ids)))
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(label_ids):
        by_label[label].append(i)
    chosen: list[int] = []
    for label in sorted(by_label):
        group = by_label[label]
        chosen += rng.sample(group, max(1, round(limit * len(group) / len(label_ids))))
    return sorted(chosen)


@torch.no_grad()
def pooled_embeddings(model, features: list[dict], *, collator, batch_size: int) -> torch.Tensor:
    """Mean-pooled last hidden states (float64, one row per feature) of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows: list[torch.Tensor] = []
    try:
        for start in range(0, len(features), batch_size):
            batch = collator(features[start:start + batch_size])
            batch.pop("labels", None)
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1].double()
            mask = batch["attention_mask"].unsqueeze(-1).double()
            rows.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(rows)


@dataclass
class LogisticModel:
    """A fitted multinomial logistic regression on standardised features."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor  # (features, classes)
    bias: torch.Tensor  # (classes,)
    iterations: int

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.double() - self.mean) / self.std

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.standardise(x) @ self.weight + self.bias, dim=-1)


def penalised_loss(z, y, w, b, *, weights: torch.Tensor, c: float = L2_C) -> torch.Tensor:
    """scikit-learn's objective sum_i w_i * CE_i + ||W||^2 / (2C), divided by n for the optimizer."""
    loss = torch.nn.functional.cross_entropy(z @ w + b, y, reduction="none")
    return ((weights * loss).sum() + (w * w).sum() / (2 * c)) / len(y)


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, *, n_classes: int,
                            weights: list[float] | None = None, c: float = L2_C) -> LogisticModel:
    """Multinomial logistic regression on standardised ``x`` minimising ``penalised_loss`` (L-BFGS)."""
    x = x.double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-8)
    z = (x - mean) / std
    n, d = z.shape
    per_example = torch.ones(n, dtype=torch.float64) if weights is None else torch.tensor(weights, dtype=torch.float64)[y]
    w = torch.zeros(d, n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=MAX_LBFGS_ITERATIONS, tolerance_grad=1e-7,
                                  tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        value = penalised_loss(z, y, w, b, weights=per_example, c=c)
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(objective)
    steps = int(optimizer.state[w].get("n_iter", 0))
    return LogisticModel(mean=mean, std=std, weight=w.detach(), bias=b.detach(), iterations=steps)


def probe_weights(training, *, labels: list[str], label_ids: list[int]) -> list[float] | None:
    """The probe's class weights: the job's own ``class_weights``; "balanced" for a weighted sampler."""
    setting = training.class_weights
    if setting is None and getattr(training, "sampler", None) == "weighted":
        setting = "balanced"
    return class_weights(setting, labels=labels, label_ids=label_ids)


def linear_probe(model, *, train_features: list[dict], eval_features: list[dict], labels: list[str],
                 training, collator, batch_size: int, seed: int) -> tuple[dict, dict]:
    """(the linear probe's metrics on ``eval_features``, {"examples": training examples it was fitted
    on, "iterations": L-BFGS iterations}); see the module docstring."""
    train_ids = [int(f["labels"]) for f in train_features]
    chosen = probe_sample(train_ids, seed=seed)
    fitted_on = [train_features[i] for i in chosen]
    x_train = pooled_embeddings(model, fitted_on, collator=collator, batch_size=batch_size)
    x_eval = pooled_embeddings(model, eval_features, collator=collator, batch_size=batch_size)
    y_train = torch.tensor([train_ids[i] for i in chosen])
    weights = probe_weights(training, labels=labels, label_ids=y_train.tolist())
    fitted = fit_logistic_regression(x_train, y_train, n_classes=len(labels), weights=weights)
    metrics = probe_metrics(fitted, x_eval, [int(f["labels"]) for f in eval_features], labels=labels)
    return metrics, {"examples": len(chosen), "iterations": fitted.iterations}


def probe_metrics(fitted: LogisticModel, x_eval: torch.Tensor, targets: list[int], *, labels: list[str]) -> dict:
    """classification_metrics of the probe's predictions, and valid_loss: the plain cross-entropy."""
    probs = fitted.predict_proba(x_eval)
    metrics = classification_metrics(predictions=probs.argmax(-1).tolist(), targets=targets, labels=labels)
    picked = probs[torch.arange(len(targets)), torch.tensor(targets)]
    metrics["valid_loss"] = float(-picked.clamp(min=1e-300).log().mean())
    return metrics
