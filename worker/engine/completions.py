"""Sample completions of the base and the tuned causal LM on a few evaluation prompts.

A loss number alone does not tell a user what fine-tuning changed; three prompts from the
evaluation split with the base model's and the tuned model's answers next to the reference do.

- Prompts: the first N_SAMPLES rows of the evaluation split: a completion row's ``prompt``, or a
  chat's messages up to its last trained assistant turn rendered with the tokenizer's chat template
  and the generation prompt (``probe_input``, as the data pipeline renders them); the reference is
  that completion or assistant message.
- Greedy decoding (deterministic, so base and tuned differ only by the weights), at most
  MAX_NEW_TOKENS new tokens, stopping at eos. The base side is generated before the first optimizer
  step, which works for every tuning method (a full fine-tune has no adapter to switch off).
- Every string is cut to MAX_CHARS characters for the card and the dashboard: the prompt keeps its
  end (where the question is), the others their start.

``evaluation["samples"]`` = ``[{"prompt", "reference", "base", "tuned"}]``.
"""

from __future__ import annotations

import torch

from worker.engine.data import CHAT, COMPLETION, Examples
from worker.engine.datasets import encode_causal_text, probe_input

N_SAMPLES = 3
MAX_NEW_TOKENS = 48
MAX_CHARS = 300


def _reference(row: dict, fmt: str) -> str:
    if fmt == COMPLETION:
        return row["completion"]
    trained = [m for m in row["messages"] if m["role"] == "assistant" and m.get("weight", 1) != 0]
    return trained[-1]["content"]


def sample_prompts(examples: Examples, *, tokenizer, n: int = N_SAMPLES) -> list[dict]:
    """[{"prompt": the model's input text, "reference": the expected answer}] of the first ``n`` rows."""
    if examples.format not in (CHAT, COMPLETION):
        return []
    return [{"prompt": probe_input(row, fmt=examples.format, tokenizer=tokenizer),
             "reference": _reference(row, examples.format)} for row in examples.rows[:n]]


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], *, max_length: int | None,
             max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """Greedy completions of ``prompts`` (new text only, special tokens dropped), one prompt at a time
    (no padding to get wrong); a prompt longer than ``max_length`` keeps its last tokens."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for prompt in prompts:
            ids = encode_causal_text(tokenizer, prompt)
            if max_length is not None:
                ids = ids[-max_length:]
            input_ids = torch.tensor([ids], device=device)
            generated = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                       generation_config=config)
            out.append(tokenizer.decode(generated[0, len(ids):], skip_special_tokens=True))
    finally:
        model.train(was_training)
    return out


def _head(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_CHARS else "…" + text[-(MAX_CHARS - 1):]


def sample_records(prompts: list[dict], *, base: list[str], tuned: list[str]) -> list[dict]:
    """The evaluation record's samples: prompt, reference, base and tuned text, each cut to MAX_CHARS."""
    return [{"prompt": _tail(p["prompt"]), "reference": _head(p["reference"]), "base": _head(b), "tuned": _head(t)}
            for p, b, t in zip(prompts, base, tuned)]


class SampleRun:
    """The samples of one job: base completions generated before training, tuned ones after."""

    def __init__(self) -> None:
        self.prompts: list[dict] = []
        self.base: list[str] = []
        self.tokenizer = None
        self.max_length: int | None = None

    def before(self, model, tokenizer, examples: Examples, *, max_length: int | None) -> None:
        self.prompts = sample_prompts(examples, tokenizer=tokenizer)
        self.tokenizer, self.max_length = tokenizer, max_length
        self.base = generate(model, tokenizer, [p["prompt"] for p in self.prompts], max_length=max_length)

    def after(self, model) -> list[dict]:
        """The evaluation record's samples ([] when ``before`` found no prompt or never ran)."""
        if not self.prompts:
            return []
        tuned = generate(model, self.tokenizer, [p["prompt"] for p in self.prompts], max_length=self.max_length)
        return sample_records(self.prompts, base=self.base, tuned=tuned)
