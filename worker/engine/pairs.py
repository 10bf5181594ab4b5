"""Preference rows (worker.engine.data's ``preference`` format) as text pairs and token ids.

A row ``{"input": [messages], "preferred_output": str, "non_preferred_output": str}`` becomes
``{"prompt", "chosen", "rejected"}`` strings rendered with the tokenizer's chat template: the prompt is
the conversation with the generation prompt (``<|im_start|>assistant\\n``), a reply is what the full
conversation adds after it, through the template's end-of-turn marker. trl's DPOTrainer trains on these
strings, and the engine's own preference evaluation (worker.engine.preference_eval) scores the very same
tokens, so the two agree on what "the reply" is.
"""

from __future__ import annotations

from worker.engine.data import Examples
from worker.engine.datasets import encode_causal_text, render_chat


def _reply_text(tokenizer, messages: list[dict], reply: str, prompt: str) -> str:
    full = render_chat(tokenizer, messages + [{"role": "assistant", "content": reply}], add_generation_prompt=False)
    if full.startswith(prompt):
        text = full[len(prompt):]
    else:  # a template that renders earlier turns differently once a reply follows: keep the whole reply turn
        text = full[len(render_chat(tokenizer, messages, add_generation_prompt=False)):]
    # Trailing newlines after the end-of-turn marker would make trl append a second eos after them; the
    # marker itself (often the eos token) is kept, so the model learns where its reply ends.
    return text.rstrip("\n")


def text_pair(tokenizer, row: dict) -> dict[str, str]:
    """``{"prompt", "chosen", "rejected"}`` for one preference row, rendered with the chat template."""
    prompt = render_chat(tokenizer, row["input"], add_generation_prompt=True)
    return {
        "prompt": prompt,
        "chosen": _reply_text(tokenizer, row["input"], row["preferred_output"], prompt),
        "rejected": _reply_text(tokenizer, row["input"], row["non_preferred_output"], prompt),
    }


def text_pairs(tokenizer, examples: Examples) -> list[dict[str, str]]:
    return [text_pair(tokenizer, row) for row in examples.rows]


def encode_pair(tokenizer, pair: dict[str, str], *, max_length: int | None) -> dict[str, list[int]]:
    """Token ids of the prompt and of each reply, cut so that prompt + reply fit ``max_length`` (the
    prompt's start is kept, as trl's default truncation keeps it)."""
    prompt = encode_causal_text(tokenizer, pair["prompt"])
    out = {"prompt_ids": prompt}
    for side in ("chosen", "rejected"):
        reply = tokenizer(pair[side], add_special_tokens=False)["input_ids"]
        ids = prompt + reply
        if max_length is not None:
            ids = ids[:max_length]
        out[f"{side}_ids"] = ids[len(prompt):] if len(ids) > len(prompt) else []
    return out


def pair_token_counts(tokenizer, examples: Examples, *, max_seq_length: int) -> dict[str, int]:
    """The data report's counts for preference pairs: every pair is fed twice (prompt + each reply)."""
    tokens = trained = truncated = untrained = longest = 0
    for pair in text_pairs(tokenizer, examples):
        full = encode_pair(tokenizer, pair, max_length=None)
        kept = encode_pair(tokenizer, pair, max_length=max_seq_length)
        n_prompt = len(full["prompt_ids"])
        lengths = [n_prompt + len(full["chosen_ids"]), n_prompt + len(full["rejected_ids"])]
        tokens += sum(lengths)
        longest = max(longest, *lengths)
        truncated += any(n > max_seq_length for n in lengths)
        n_trained = len(kept["chosen_ids"]) + len(kept["rejected_ids"])
        trained += n_trained
        untrained += not (kept["chosen_ids"] and kept["rejected_ids"])
    return {"tokens": tokens, "trained_tokens": trained, "max_example_tokens": longest,
            "max_seq_length": max_seq_length, "truncated_examples": truncated, "untrained_examples": untrained}
