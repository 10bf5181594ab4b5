"""Preference accuracy: how often a model gives the preferred reply a higher log-probability than the other.

Measured with the engine's own forward passes, not trl's metrics: before training it is the base model's
figure (the DPO baseline, DESIGN.md 4b), after training the tuned model's, on the same held-out pairs.
A reply's score is the sum of its tokens' log-probabilities given the prompt (what DPO's loss compares).
"""

from __future__ import annotations

import torch

from worker.engine.pairs import encode_pair

PRIMARY_METRIC = "preference_accuracy"


def _sequences(tokenizer, pairs: list[dict], max_length: int) -> list[tuple[list[int], int]]:
    """(token ids, where the reply starts) for each pair's chosen then rejected reply."""
    out = []
    for pair in pairs:
        enc = encode_pair(tokenizer, pair, max_length=max_length)
        for side in ("chosen", "rejected"):
            out.append((enc["prompt_ids"] + enc[f"{side}_ids"], len(enc["prompt_ids"])))
    return out


@torch.no_grad()
def reply_logprobs(model, tokenizer, pairs: list[dict], *, max_length: int, batch_size: int = 8) -> list[float]:
    """Summed log-probability of each reply given its prompt: [chosen_0, rejected_0, chosen_1, ...]."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores: list[float] = []
    seqs = _sequences(tokenizer, pairs, max_length)
    try:
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start:start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, (ids, _) in enumerate(chunk):
                input_ids[i, :len(ids)] = torch.tensor(ids)
                mask[i, :len(ids)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = input_ids[:, 1:].to(device)
            token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            for i, (ids, reply_start) in enumerate(chunk):
                # position t predicts token t+1: the reply's tokens are predicted from reply_start-1 on
                scores.append(float(token_lp[i, reply_start - 1:len(ids) - 1].sum()))
    finally:
        model.train(was_training)
    return scores


def preference_metrics(model, tokenizer, pairs: list[dict], *, max_length: int, batch_size: int = 8) -> dict:
    """``{"preference_accuracy", "logprob_margin", "pairs"}``; a tie counts as not preferring."""
    scores = reply_logprobs(model, tokenizer, pairs, max_length=max_length, batch_size=batch_size)
    margins = [scores[i] - scores[i + 1] for i in range(0, len(scores), 2)]
    n = max(len(margins), 1)
    return {"preference_accuracy": sum(m > 0 for m in margins) / n, "logprob_margin": sum(margins) / n,
            "pairs": len(margins)}
