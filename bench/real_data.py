"""Real text data that installs offline from registry packages, for the quality benchmark and the tests.

- Debian's ``fortunes`` packages (``apt-get install fortunes fortunes-de fortunes-es fortunes-it``):
  one file per topic in /usr/share/games/fortunes (computers, politics, science, ...), one folder per
  language (de/, es/, it/); entries are separated by lines holding a single ``%``.
- PyPI's ``chatterbot-corpus``: YAML files of question/answer conversations per language and topic.

Nothing here imports hubtune; the bench scripts and the tests both read their data through it.
"""

from __future__ import annotations

import importlib.util
import random
import re
from pathlib import Path

FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNES_INSTALL = "apt-get install -y fortunes fortunes-de fortunes-es fortunes-it"


class MissingData(RuntimeError):
    """A registry package that holds the data is not installed (the message says which)."""


def _clean(text: str) -> str:
    # Fortunes carry attribution lines ("-- Mark Twain") and hard line breaks: keep the words only.
    text = re.sub(r"\n\s*--.*$", "", text.strip(), flags=re.S)
    return re.sub(r"\s+", " ", text).strip()


def fortunes(topic: str, *, max_chars: int = 400) -> list[str]:
    """The entries of one fortunes file (``"computers"``, ``"de/anekdoten"``), cleaned, deduplicated,
    in file order; entries longer than ``max_chars`` are dropped (long poems say little per token)."""
    path = FORTUNES_DIR / topic
    if not path.is_file():
        raise MissingData(f"{path} is missing: {FORTUNES_INSTALL}")
    raw = path.read_text(encoding="utf-8", errors="replace")
    seen: set[str] = set()
    out = []
    for entry in raw.split("\n%\n"):
        text = _clean(entry.strip("%\n"))
        if 20 <= len(text) <= max_chars and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def language_fortunes(language: str, *, max_chars: int = 400) -> list[str]:
    """Every entry of a language folder (``"de"``, ``"es"``, ``"it"``), files in name order."""
    folder = FORTUNES_DIR / language
    if not folder.is_dir():
        raise MissingData(f"{folder} is missing: {FORTUNES_INSTALL}")
    out: list[str] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix not in (".dat", ".u8")):
        out += fortunes(f"{language}/{path.name}", max_chars=max_chars)
    return out


def labelled_rows(counts: dict[str, int], *, source=fortunes, seed: int = 0, skip: int = 0) -> list[dict]:
    """``{"text", "label"}`` rows: ``counts[label]`` entries of each topic, drawn by a seeded shuffle
    after leaving out the first ``skip`` of the shuffled entries (so a train and a test set drawn with
    different ``skip`` never share a text). Rows come back shuffled."""
    rng = random.Random(seed)
    rows = []
    for label, n in counts.items():
        texts = source(label)
        rng.shuffle(texts)
        picked = texts[skip:skip + n]
        if len(picked) < n:
            raise MissingData(f"{label!r} has {len(texts)} entries, fewer than {skip + n} asked for")
        rows += [{"text": t, "label": label} for t in picked]
    rng.shuffle(rows)
    return rows


def split_rows(rows: list[dict], *, test_fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, test), stratified by label when rows have one; the test rows are never trained on."""
    rng = random.Random(seed)
    groups: dict[object, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get("label"), []).append(row)
    train, test = [], []
    for group in groups.values():
        group = group[:]
        rng.shuffle(group)
        k = max(1, round(test_fraction * len(group)))
        test += group[:k]
        train += group[k:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def chatterbot_dir(language: str = "english") -> Path:
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise MissingData("the PyPI package chatterbot-corpus is not installed: pip install chatterbot-corpus")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / language


def chatterbot_conversations(language: str = "english", topics: list[str] | None = None) -> dict[str, list[list[str]]]:
    """``{topic: [conversation, ...]}``; a conversation is a list of turns (user, bot, user, ...)."""
    import yaml

    out = {}
    for path in sorted(chatterbot_dir(language).glob("*.yml")):
        if topics is not None and path.stem not in topics:
            continue
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        convs = [[str(t) for t in conv] for conv in data.get("conversations") or [] if len(conv) >= 2]
        if convs:
            out[path.stem] = convs
    return out


def train_test_rows(train_counts: dict[str, int], test_counts: dict[str, int], *, source=fortunes,
                    seed: int = 0, relabel: dict[str, str] | None = None) -> tuple[list[dict], list[dict]]:
    """(train, test) ``{"text", "label"}`` rows: per topic, a seeded shuffle's first ``train_counts[t]``
    entries train and the next ``test_counts[t]`` test (never the same text). ``relabel`` maps topics
    onto the label they carry (several topics may become "other"). Both lists come back shuffled."""
    rng = random.Random(seed)
    train, test = [], []
    for topic, n_train in train_counts.items():
        texts = source(topic)
        rng.shuffle(texts)
        n_test = test_counts.get(topic, 0)
        if len(texts) < n_train + n_test:
            raise MissingData(f"{topic!r} has {len(texts)} entries, fewer than {n_train + n_test} asked for")
        label = (relabel or {}).get(topic, topic)
        train += [{"text": t, "label": label} for t in texts[:n_train]]
        test += [{"text": t, "label": label} for t in texts[n_train:n_train + n_test]]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


# Unhelpful replies: the "non-preferred" side of the preference pairs below.
UNHELPFUL_REPLIES = ("I don't know.", "No.", "I can't help with that.", "Ask someone else.", "Whatever.")


def chatterbot_preference_pairs(n_train: int, n_test: int, *, seed: int = 0, max_chars: int = 160,
                                ) -> tuple[list[dict], list[dict]]:
    """(train, test) rows in OpenAI's preference format from chatterbot-corpus's real chats: the user's
    question, the corpus's own answer preferred over a curt unhelpful reply. Questions are distinct, and
    never in both lists; answers are 20 to ``max_chars`` characters (a small model's context)."""
    rng = random.Random(seed)
    seen, chats = set(), []
    for topic, convs in sorted(chatterbot_conversations().items()):
        if topic == "tech_support":  # a thousand near-identical support lines would crowd out the rest
            continue
        for conv in convs:
            question, answer = conv[0].strip(), conv[1].strip()
            if question.lower() in seen or not 20 <= len(answer) <= max_chars or len(question) > max_chars:
                continue
            seen.add(question.lower())
            chats.append((question, answer))
    rng.shuffle(chats)
    if len(chats) < n_train + n_test:
        raise MissingData(f"chatterbot-corpus has {len(chats)} usable chats, fewer than {n_train + n_test}")
    rows = [{"input": {"messages": [{"role": "user", "content": q}]},
             "preferred_output": [{"role": "assistant", "content": a}],
             "non_preferred_output": [{"role": "assistant", "content": rng.choice(UNHELPFUL_REPLIES)}]}
            for q, a in chats[:n_train + n_test]]
    return rows[:n_train], rows[n_train:]
