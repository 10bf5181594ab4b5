"""Tokenisation of validated examples into model inputs, and the padding collator.

- classification: ``input_ids``/``attention_mask`` (the tokenizer's own special tokens) and
  ``labels`` = the label's index in ``Examples.labels``.
- chat: the conversation rendered with the tokenizer's chat template; ``labels`` are -100 everywhere
  except the tokens of trained assistant messages. A message's span starts where the conversation
  before it, rendered with ``add_generation_prompt=True``, ends and stops where the conversation
  through that message ends (so the template's end-of-turn marker is trained too).
- completion: ``prompt + completion``; prompt tokens are masked, completion tokens and eos trained.

Causal texts are tokenised without the tokenizer's own special tokens; a bos token is put first when
the model has one distinct from eos and the text does not already start with it (chat templates often
render it themselves). Everything is cut at ``max_seq_length`` tokens (the start is kept).
"""

from __future__ import annotations

from typing import Any

import torch

from worker.engine.data import CHAT, CLASSIFICATION, COMPLETION, DataError, Examples

IGNORE_INDEX = -100


def _plain_messages(messages: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def render_chat(tokenizer, messages: list[dict], *, add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "the base model's tokenizer has no chat template; use prompt/completion data instead",
            code="invalid_file_format",
            param="training_file",
        )
    return tokenizer.apply_chat_template(
        _plain_messages(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _bos_prefix(tokenizer, text: str) -> list[int]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or bos == eos or (tokenizer.bos_token and text.startswith(tokenizer.bos_token)):
        return []
    return [bos]


def encode_causal_text(tokenizer, text: str) -> list[int]:
    """The token ids a causal model sees for ``text`` (used for training and for probes alike)."""
    return _bos_prefix(tokenizer, text) + tokenizer(text, add_special_tokens=False)["input_ids"]


def _encode_with_spans(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Token ids of ``text`` and labels that keep the tokens starting inside one of ``spans`` (chars)."""
    prefix = _bos_prefix(tokenizer, text)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = enc["offset_mapping"]
        labels = [
            tok if any(s <= start < e for s, e in spans) and end > start else IGNORE_INDEX
            for tok, (start, end) in zip(ids, offsets)
        ]
    except (NotImplementedError, ValueError, TypeError):
        # Slow tokenizers have no offsets: count the tokens of each span's text prefixes instead.
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        labels = [IGNORE_INDEX] * len(ids)
        for s, e in spans:
            a = len(tokenizer(text[:s], add_special_tokens=False)["input_ids"])
            b = len(tokenizer(text[:e], add_special_tokens=False)["input_ids"])
            for i in range(a, min(b, len(ids))):
                labels[i] = ids[i]
    return prefix + ids, [IGNORE_INDEX] * len(prefix) + labels


def chat_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its trained assistant messages."""
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = ""
        if i:
            try:
                before = render_chat(tokenizer, messages[:i], add_generation_prompt=True)
            except Exception:  # some templates refuse a conversation that does not end on a user turn
                before = None
        through = render_chat(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if (
            before is not None
            and full.startswith(before)
            and full.startswith(through)
            and len(through) > len(before) >= cursor
        ):
            start, end = len(before), len(through)
        else:
            # Templates that render earlier turns differently (e.g. dropping reasoning): find the content.
            start = full.find(message["content"], cursor)
            if start < 0:
                raise DataError(
                    "cannot locate an assistant message in the chat template's output",
                    code="invalid_messages",
                    param="training_file",
                )
            end = start + len(message["content"])
            eos = tokenizer.eos_token
            if eos and full.startswith(eos, end):
                end += len(eos)
        cursor = end
        if message.get("weight", 1) != 0:
            spans.append((start, end))
    return full, spans


def encode_example(
    row: dict, *, fmt: str, tokenizer, label2id: dict[str, int] | None, max_seq_length: int | None
) -> dict[str, Any]:
    """One validated row -> ``input_ids``, ``attention_mask``, ``labels`` (cut at ``max_seq_length``)."""
    if fmt == CLASSIFICATION:
        enc = tokenizer(
            row["text"], truncation=max_seq_length is not None, max_length=max_seq_length
        )
        label = label2id[row["label"]] if label2id is not None else IGNORE_INDEX
        ids = list(enc["input_ids"])
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": label}
    if fmt == CHAT:
        text, spans = chat_spans(tokenizer, row["messages"])
        ids, labels = _encode_with_spans(tokenizer, text, spans)
    elif fmt == COMPLETION:
        text = row["prompt"] + row["completion"]
        ids, labels = _encode_with_spans(tokenizer, text, [(len(row["prompt"]), len(text))])
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
            labels.append(tokenizer.eos_token_id)
    else:
        raise ValueError(f"unknown data format {fmt!r}")
    if max_seq_length is not None:
        ids, labels = ids[:max_seq_length], labels[:max_seq_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def probe_input(row: dict, *, fmt: str, tokenizer) -> str:
    """The raw text a probe feeds the model: the text, the prompt, or the chat up to its last trained
    assistant message rendered with the generation prompt."""
    if fmt == CLASSIFICATION:
        return row["text"]
    if fmt == COMPLETION:
        return row["prompt"]
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1) != 0)
    return render_chat(tokenizer, messages[:last], add_generation_prompt=True)


class EncodedDataset(torch.utils.data.Dataset):
    def __init__(self, features: list[dict], *, skipped: list[int], tokens: int) -> None:
        self.features = features
        self.skipped = skipped  # row indices left out: no trained token after truncation
        self.tokens = tokens  # tokens of the kept examples (after truncation)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        return self.features[index]


def build_dataset(
    examples: Examples, *, tokenizer, max_seq_length: int, label2id: dict[str, int] | None = None
) -> EncodedDataset:
    """Encode every row; causal rows left with no trained token after truncation are skipped."""
    label2id = label2id if label2id is not None else examples.label2id
    features, skipped, tokens = [], [], 0
    for index, row in enumerate(examples.rows):
        feature = encode_example(
            row, fmt=examples.format, tokenizer=tokenizer, label2id=label2id, max_seq_length=max_seq_length
        )
        if examples.format != CLASSIFICATION and all(x == IGNORE_INDEX for x in feature["labels"]):
            skipped.append(index)
            continue
        features.append(feature)
        tokens += len(feature["input_ids"])
    return EncodedDataset(features, skipped=skipped, tokens=tokens)


class PadCollator:
    """Right-pads a batch to its longest example: ids with the pad token, mask with 0, labels -100."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch = {
            "input_ids": torch.tensor(
                [f["input_ids"] + [self.pad_token_id] * (width - len(f["input_ids"])) for f in features],
                dtype=torch.long,
            ),
            "attention_mask": torch.tensor(
                [f["attention_mask"] + [0] * (width - len(f["attention_mask"])) for f in features],
                dtype=torch.long,
            ),
        }
        if "labels" in features[0]:
            first = features[0]["labels"]
            if isinstance(first, list):
                batch["labels"] = torch.tensor(
                    [f["labels"] + [IGNORE_INDEX] * (width - len(f["labels"])) for f in features],
                    dtype=torch.long,
                )
            else:
                batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch
