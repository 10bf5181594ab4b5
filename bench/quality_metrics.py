"""The quality bench's metrics, one code path for the plain script and hubtune alike.

- classification: predicted labels (the model's own id2label) -> macro-F1 and accuracy, and the
  majority-class baseline's macro-F1 on the same test set.
- causal: the mean loss of the held-out completion/assistant tokens (and the eos that ends them),
  weighted by token, prompts and user turns masked. ``encode_causal`` is also how the plain script
  encodes its training rows (the way one writes it by hand: the chat template, assistant spans kept).

Nothing here imports hubtune or worker.
"""

from __future__ import annotations

IGNORE = -100


def macro_f1(gold: list[str], pred: list[str]) -> float:
    labels = sorted(set(gold))
    scores = []
    for lab in labels:
        tp = sum(1 for g, p in zip(gold, pred) if g == lab and p == lab)
        fp = sum(1 for g, p in zip(gold, pred) if g != lab and p == lab)
        fn = sum(1 for g, p in zip(gold, pred) if g == lab and p != lab)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def accuracy(gold: list[str], pred: list[str]) -> float:
    return sum(g == p for g, p in zip(gold, pred)) / len(gold)


def majority_macro_f1(train_labels: list[str], gold: list[str]) -> float:
    """Macro-F1 of always answering the training set's most frequent label."""
    top = max(sorted(set(train_labels)), key=train_labels.count)
    return macro_f1(gold, [top] * len(gold))


def predict_labels(model, tokenizer, texts: list[str], *, max_len: int, batch: int = 32) -> list[str]:
    import torch

    model.eval()
    id2label = model.config.id2label
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i:i + batch], truncation=True, max_length=max_len, padding=True,
                            return_tensors="pt")
            logits = model(**enc).logits
            out += [id2label[int(k)] for k in logits.argmax(-1)]
    return out


def classification_scores(model, tokenizer, train: list[dict], test: list[dict], *, max_len: int) -> dict:
    gold = [r["label"] for r in test]
    pred = predict_labels(model, tokenizer, [r["text"] for r in test], max_len=max_len)
    return {"macro_f1": round(macro_f1(gold, pred), 4), "accuracy": round(accuracy(gold, pred), 4),
            "majority_macro_f1": round(majority_macro_f1([r["label"] for r in train], gold), 4)}


def _bos(tokenizer, text: str) -> list[int]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or bos == eos or (tokenizer.bos_token and text.startswith(tokenizer.bos_token)):
        return []
    return [bos]


def _chat_text_and_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant replies (with their end
    marker): the text a reply adds after the generation prompt of the turns before it."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            through = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
            spans.append((len(before), len(through)))
    return full, spans


def encode_causal(tokenizer, row: dict, *, max_len: int) -> dict:
    """``input_ids`` and ``labels`` (IGNORE outside the completion / assistant replies)."""
    if "messages" in row:
        text, spans = _chat_text_and_spans(tokenizer, row["messages"])
        tail = []
    else:
        text, spans = row["prompt"] + row["completion"], [(len(row["prompt"]), len(row["prompt"] + row["completion"]))]
        tail = [tokenizer.eos_token_id]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [t if any(s <= a < e for s, e in spans) and b > a else IGNORE for t, (a, b) in zip(ids, enc["offset_mapping"])]
    head = _bos(tokenizer, text)
    ids, labels = head + ids + tail, [IGNORE] * len(head) + labels + tail
    return {"input_ids": ids[:max_len], "labels": labels[:max_len]}


def causal_loss(model, tokenizer, rows: list[dict], *, max_len: int) -> dict:
    """Mean held-out loss per completion/assistant token (one example at a time: no padding)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            enc = encode_causal(tokenizer, row, max_len=max_len)
            ids = torch.tensor([enc["input_ids"]])
            labels = torch.tensor(enc["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1].float()
            keep = labels != IGNORE
            if keep.any():
                total += float(F.cross_entropy(logits[keep], labels[keep], reduction="sum"))
                count += int(keep.sum())
    return {"test_loss": round(total / count, 4), "test_tokens": count}
