"""The quality bench's tasks: real offline data (bench/real_data.py), a train set and a test set that
training never sees, and the base model each task tunes (bench/real_models.py).

Each task is ``Task(name, kind, model, train, test, plain)``: ``plain`` is how one would write the
plain transformers + peft script by hand for it (epochs, batch, max_len, the learning-rate grid).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from bench.real_data import chatterbot_conversations, fortunes, train_test_rows

CLASSIFICATION_GRID = (2e-4, 1e-3, 3e-3, 1e-2)
CAUSAL_GRID = (1e-4, 3e-4, 1e-3, 3e-3)
# Topics of the binary task's "other" class: none about computers (computer, linux, perl, debian,
# bofh-excuses and definitions hold many computer jokes, so they are left out).
OTHER_TOPICS = ("people", "politics", "science", "work", "men-women", "art", "literature", "wisdom")


@dataclass
class Task:
    name: str
    kind: str  # "sequence_classification" | "causal_lm"
    model: str  # "minilm" | "smollm2"
    train: list[dict]
    test: list[dict]
    plain: dict = field(default_factory=dict)  # epochs, batch, max_len, grid


def binary_imbalanced(seed: int) -> Task:
    """~1,000 train, 8 % "computers" against eight other topics; test 400 at the same 8 %."""
    train_counts = {"computers": 80, **{t: 115 for t in OTHER_TOPICS}}
    test_counts = {"computers": 32, **{t: 46 for t in OTHER_TOPICS}}
    train, test = train_test_rows(train_counts, test_counts, seed=seed, relabel={t: "other" for t in OTHER_TOPICS})
    return Task("binary_imbalanced", "sequence_classification", "minilm", train, test,
                {"epochs": 3, "batch": 16, "max_len": 128, "grid": CLASSIFICATION_GRID})


def multiclass_imbalanced(seed: int) -> Task:
    """4 classes 200/150/100/50 (500 train); test 100/75/50/40."""
    train, test = train_test_rows({"politics": 200, "science": 150, "work": 100, "food": 50},
                                  {"politics": 100, "science": 75, "work": 50, "food": 40}, seed=seed)
    return Task("multiclass_imbalanced", "sequence_classification", "minilm", train, test,
                {"epochs": 3, "batch": 16, "max_len": 128, "grid": CLASSIFICATION_GRID})


def small(seed: int) -> Task:
    """75 train (25 each of startrek/law/food), test 75: by hand, a small set gets 10 epochs, batch 8."""
    topics = ("startrek", "law", "food")
    train, test = train_test_rows({t: 25 for t in topics}, {t: 25 for t in topics}, seed=seed)
    return Task("small", "sequence_classification", "minilm", train, test,
                {"epochs": 10, "batch": 8, "max_len": 128, "grid": CLASSIFICATION_GRID})


def medium(seed: int) -> Task:
    """2,000 train (400 each of 5 topics), test 500."""
    topics = ("definitions", "politics", "science", "work", "songs-poems")
    train, test = train_test_rows({t: 400 for t in topics}, {t: 100 for t in topics}, seed=seed)
    return Task("medium", "sequence_classification", "minilm", train, test,
                {"epochs": 3, "batch": 16, "max_len": 128, "grid": CLASSIFICATION_GRID})


def _roles(turns: list[str]) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def chat(seed: int) -> Task:
    """chatterbot-corpus English conversations (tech_support left out: long, repetitive), as chat
    messages: 120 train, 40 test."""
    convs = [c for topic, cs in chatterbot_conversations("english").items() if topic != "tech_support" for c in cs]
    convs = [c[:4] for c in convs if sum(len(t) for t in c[:4]) <= 400]  # fits 128 tokens with the template
    random.Random(seed).shuffle(convs)
    rows = [{"messages": _roles(c if len(c) % 2 == 0 else c[:-1])} for c in convs]
    return Task("chat", "causal_lm", "smollm2", rows[:120], rows[120:160],
                {"epochs": 3, "batch": 8, "max_len": 128, "grid": CAUSAL_GRID})


def completion(seed: int) -> Task:
    """Fortunes "definitions": the prompt is the term ("Abstainer, n.:"), the completion the definition."""
    rows = []
    for text in fortunes("definitions", max_chars=300):
        m = re.match(r"^([^:]{2,60}:)(\s.+)$", text)
        if m:
            rows.append({"prompt": m.group(1), "completion": m.group(2)})
    random.Random(seed).shuffle(rows)
    return Task("completion", "causal_lm", "smollm2", rows[:150], rows[150:190],
                {"epochs": 3, "batch": 8, "max_len": 128, "grid": CAUSAL_GRID})


TASKS = {f.__name__: f for f in (binary_imbalanced, multiclass_imbalanced, small, medium, chat, completion)}
