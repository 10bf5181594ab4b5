"""Reference outputs: what a model says on a few probe inputs, so a saved artifact can be checked
against the trained in-memory model (the e2e checks and the hub round trip compare them)."""

from __future__ import annotations

from typing import Any

import torch

from worker.engine.data import CAUSAL_LM, SEQUENCE_CLASSIFICATION, Examples
from worker.engine.datasets import encode_causal_text, probe_input

N_PROBES = 4
TOP_K = 5


@torch.no_grad()
def reference_outputs(model, tokenizer, *, task: str, inputs: list[str], max_length: int | None = None) -> dict:
    """Outputs of ``model`` (put in eval mode) on ``inputs``, one at a time (no padding).

    sequence_classification: ``{"task", "inputs", "logits": [[one per label], ...]}``.
    causal_lm: the last position's top-5 tokens: ``{"task", "inputs", "token_ids": [[5 ids]],
    "logits": [[5 values]]}``. Texts are cut to ``max_length`` tokens (the start for classification,
    the end for causal prompts, which keeps the position that predicts the answer).
    """
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, Any] = {"task": task, "inputs": list(inputs), "logits": []}
    if task == CAUSAL_LM:
        out["token_ids"] = []
    for text in inputs:
        if task == SEQUENCE_CLASSIFICATION:
            ids = tokenizer(text, truncation=max_length is not None, max_length=max_length)["input_ids"]
        else:
            ids = encode_causal_text(tokenizer, text)
            if max_length is not None:
                ids = ids[-max_length:]
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits.float()
        if task == SEQUENCE_CLASSIFICATION:
            out["logits"].append(logits[0].cpu().tolist())
        else:
            values, indices = logits[0, -1].topk(TOP_K)
            out["logits"].append(values.cpu().tolist())
            out["token_ids"].append(indices.cpu().tolist())
    return out


def probe_inputs(examples: Examples, *, tokenizer) -> list[str]:
    """The first N_PROBES examples as the model reads them (the prompt, for causal examples)."""
    return [probe_input(row, fmt=examples.format, tokenizer=tokenizer) for row in examples.rows[:N_PROBES]]
