"""Which training-file rows a job holds out for evaluation, and whether the split can be trusted.

The rule (prepare's data report and the trainer share it, so prepare's example counts follow):

- classification: per label, ``max(round(fraction x n_c), 5)`` examples, but the growth past
  ``round(fraction x n_c)`` never takes more than 25 % of the label's examples, and every label keeps
  at least one training example. Then, when the total is below 20 and 20 examples are at most 25 %
  of the file, the split is topped up to 20, spread over the labels with room (within their 25 %).
- causal_lm: ``round(fraction x n)`` (at least 1), grown to 20 when 20 is at most 25 % of the file.

Why: a 60-example, 3-class set with the old ``round(0.1 x n)`` held out 6 examples (2 per label):
the job reported accuracy 1.0 and "beat the baseline" while the model's softmax sat near 1/3 for
every class. Five examples per label is where one mistake moves a label's recall by 0.2, not 0.5.

A split with fewer than MIN_EVAL_EXAMPLES examples, or fewer than MIN_EVAL_PER_LABEL of some label
(a user's validation file too), is marked ``reliable: False`` with a reason in words.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from worker.engine.data import SEQUENCE_CLASSIFICATION, Examples

MIN_EVAL_EXAMPLES = 20
MIN_EVAL_PER_LABEL = 5
MAX_GROWN_SHARE = 0.25  # the split grows only while it takes at most this share (per label and of the file)

RULE = (f"held out per label max(round(fraction x n), {MIN_EVAL_PER_LABEL}) examples, growing to at most "
        f"{MAX_GROWN_SHARE:.0%} of the label, then topped up to {MIN_EVAL_EXAMPLES} when that is at most "
        f"{MAX_GROWN_SHARE:.0%} of the file")
RULE_CAUSAL_LM = (f"held out round(fraction x n) examples, grown to {MIN_EVAL_EXAMPLES} when that is at most "
                  f"{MAX_GROWN_SHARE:.0%} of the file")


def held_out_indices(examples: Examples, *, fraction: float, seed: int) -> list[int]:
    """Row indices to hold out under the module's rule, chosen by a generator seeded with ``seed``."""
    if fraction <= 0 or len(examples) < 2:
        return []
    rng = random.Random(seed)
    if examples.task == SEQUENCE_CLASSIFICATION:
        return _per_label(examples, fraction=fraction, rng=rng)
    n = len(examples)
    k = max(1, round(fraction * n))
    if k < MIN_EVAL_EXAMPLES <= MAX_GROWN_SHARE * n:
        k = MIN_EVAL_EXAMPLES
    return sorted(rng.sample(range(n), min(k, n - 1)))


def _per_label(examples: Examples, *, fraction: float, rng: random.Random) -> list[int]:
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(examples.rows):
        by_label[row["label"]].append(i)
    # Each label's rows in a seeded order: the first take[label] of them are held out.
    order = {label: rng.sample(by_label[label], len(by_label[label])) for label in examples.labels}
    take: dict[str, int] = {}
    room: dict[str, int] = {}
    for label in examples.labels:
        n_c = len(order[label])
        asked = round(fraction * n_c)
        limit = min(max(asked, int(MAX_GROWN_SHARE * n_c)), n_c - 1)
        take[label] = min(max(asked, MIN_EVAL_PER_LABEL), limit)
        room[label] = limit - take[label]
    total = sum(take.values())
    if total < MIN_EVAL_EXAMPLES <= MAX_GROWN_SHARE * len(examples):
        _top_up(take, room, MIN_EVAL_EXAMPLES - total)
    return sorted(i for label in examples.labels for i in order[label][: take[label]])


def _top_up(take: dict[str, int], room: dict[str, int], missing: int) -> None:
    """One more example at a time to the label with the most room left (ties: label order)."""
    while missing > 0:
        label = max(room, key=lambda name: room[name], default=None)
        if label is None or room[label] <= 0:
            return
        take[label] += 1
        room[label] -= 1
        missing -= 1


SOURCE_WORDS = {"held_out": "held-out", "validation_file": "validation-file", "training_file": "training"}


def reliability(evaluated: Examples, *, source: str, primary_metric: str) -> dict:
    """``{"reliable": bool, "unreliable_reason": str | None}`` for the examples a job is evaluated on."""
    n = len(evaluated)
    words = SOURCE_WORDS.get(source, source)
    if source == "training_file":
        return {"reliable": False, "unreliable_reason": (
            f"nothing was held out: the {n} training examples themselves are evaluated, so {primary_metric} "
            "measures memorisation, not how the model does on new text")}
    counts = Counter(row["label"] for row in evaluated.rows) if evaluated.task == SEQUENCE_CLASSIFICATION else None
    fewest = min((counts.get(label, 0) for label in evaluated.labels), default=0) if counts is not None else None
    if n >= MIN_EVAL_EXAMPLES and (fewest is None or fewest >= MIN_EVAL_PER_LABEL):
        return {"reliable": True, "unreliable_reason": None}
    if counts is None:
        return {"reliable": False, "unreliable_reason": (
            f"only {n} {words} examples; at least {MIN_EVAL_EXAMPLES} are needed for a stable {primary_metric}")}
    return {"reliable": False, "unreliable_reason": (
        f"only {n} {words} examples ({_per_label_words(counts, evaluated.labels)}); at least "
        f"{MIN_EVAL_EXAMPLES} and {MIN_EVAL_PER_LABEL} per label are needed for a stable {primary_metric}")}


def _per_label_words(counts: Counter, labels: list[str]) -> str:
    values = [counts.get(label, 0) for label in labels]
    if len(set(values)) == 1:
        return f"{values[0]} per label"
    fewest = min(labels, key=lambda label: counts.get(label, 0))
    return f"{counts.get(fewest, 0)} of label {fewest!r}, the fewest"
