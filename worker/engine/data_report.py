"""The data report: counts and warnings for a data file as the tokenizer sees it (prepare shows it).

Apart from data.py because it tokenizes: data.py only reads and validates files, and datasets.py
(which encodes) builds on it, so the report sits above both.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from worker.engine.data import CLASSIFICATION, MIN_EXAMPLES, MIN_EXAMPLES_PER_CLASS, PREFERENCE, Examples
from worker.engine.datasets import encode_example
from worker.engine.pairs import pair_token_counts


def data_report(examples: Examples, *, tokenizer, max_seq_length: int) -> dict:
    """Counts for a data file, as the tokenizer sees it.

    Returns ``examples``, ``tokens`` (all tokens of all examples before truncation), ``trained_tokens``
    (the tokens that carry a loss after truncation; every token for classification),
    ``max_example_tokens``, ``truncated_examples`` (longer than ``max_seq_length``),
    ``untrained_examples`` (causal examples left with no trained token after truncation; training
    skips them), ``label_counts`` ({label: count}, classification only) and ``warnings``.
    """
    report: dict[str, Any] = {
        "task": examples.task,
        "format": examples.format,
        "examples": len(examples.rows),
        **(pair_token_counts(tokenizer, examples, max_seq_length=max_seq_length) if examples.format == PREFERENCE
           else _token_counts(examples, tokenizer=tokenizer, max_seq_length=max_seq_length)),
    }
    warnings: list[str] = list(examples.notes)
    if len(examples.rows) < MIN_EXAMPLES:
        warnings.append(
            f"only {len(examples.rows)} examples; at least {MIN_EXAMPLES} are recommended"
        )
    if examples.format == CLASSIFICATION:
        counts = Counter(row["label"] for row in examples.rows)
        report["label_counts"] = {label: counts[label] for label in examples.labels}
        for label in examples.labels:
            if counts[label] < MIN_EXAMPLES_PER_CLASS:
                warnings.append(
                    f"label {label!r} has only {counts[label]} examples; "
                    f"at least {MIN_EXAMPLES_PER_CLASS} per class are recommended"
                )
    if report["truncated_examples"]:
        warnings.append(
            f"{report['truncated_examples']} examples are longer than max_seq_length={max_seq_length} tokens "
            "and will be truncated"
        )
    if report["untrained_examples"]:
        warnings.append(
            f"{report['untrained_examples']} examples have no trained tokens left after truncation at "
            f"max_seq_length={max_seq_length} and will be skipped"
        )
    report["warnings"] = warnings
    return report


def _token_counts(examples: Examples, *, tokenizer, max_seq_length: int) -> dict[str, int]:
    label2id = examples.label2id
    tokens = trained = truncated = untrained = longest = 0
    for row in examples.rows:
        full = encode_example(
            row, fmt=examples.format, tokenizer=tokenizer, label2id=label2id, max_seq_length=None
        )
        n = len(full["input_ids"])
        tokens += n
        longest = max(longest, n)
        if n > max_seq_length:
            truncated += 1
        if examples.format == CLASSIFICATION:
            trained += min(n, max_seq_length)
        else:
            n_trained = sum(1 for label in full["labels"][:max_seq_length] if label != -100)
            trained += n_trained
            if n_trained == 0:
                untrained += 1
    return {"tokens": tokens, "trained_tokens": trained, "max_example_tokens": longest,
            "max_seq_length": max_seq_length, "truncated_examples": truncated, "untrained_examples": untrained}
