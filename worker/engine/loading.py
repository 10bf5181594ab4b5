"""Loading a base model and its tokenizer for training or inference (safetensors, float32)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from worker.engine.data import CAUSAL_LM, SEQUENCE_CLASSIFICATION


def quiet() -> None:
    """No download/progress bars from transformers: the hooks report progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@contextlib.contextmanager
def _transformers_verbosity(level: int):
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity(level)
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def load_tokenizer(model_dir: Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        for candidate in (tokenizer.eos_token, tokenizer.unk_token):
            if candidate is not None:
                tokenizer.pad_token = candidate
                break
        else:
            raise ValueError("the tokenizer has no pad, eos or unk token to pad with")
    return tokenizer


def load_base_model(
    model_dir: Path, *, task: str, labels: list[str] | None = None, tokenizer=None, method_kwargs: dict | None = None,
    trust_remote_code: bool = False,
):
    """The base model from safetensors (remote code only for repos a server setting allows), float32, and the names of the modules the
    checkpoint lacked (a new task head): those must be trained in full and saved with the adapter."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    kwargs: dict[str, Any] = {
        "use_safetensors": True,
        "trust_remote_code": trust_remote_code,
        "dtype": torch.float32,
        "output_loading_info": True,
        **(method_kwargs or {}),  # the tuning method's (e.g. qlora's 4-bit quantization config)
    }
    if task == SEQUENCE_CLASSIFICATION and not labels:
        raise ValueError("sequence_classification needs the label names")
    if task not in (SEQUENCE_CLASSIFICATION, CAUSAL_LM):
        raise ValueError(f"unknown task {task!r}")
    # The "newly initialized" load report is expected (a new head) and handled below: keep it quiet.
    with _transformers_verbosity(hf_logging.ERROR):
        if task == SEQUENCE_CLASSIFICATION:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir),
                num_labels=len(labels),
                id2label={i: label for i, label in enumerate(labels)},
                label2id={label: i for i, label in enumerate(labels)},
                **kwargs,
            )
        else:
            model, info = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if tokenizer is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    new_modules = sorted({key.rsplit(".", 1)[0] for key in info.get("missing_keys", ()) if "." in key})
    return model, new_modules


def count_params(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
