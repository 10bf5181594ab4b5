"""Process-level tuning for long-lived training processes.

torch + transformers + peft leave ~450,000 objects that live as long as the process. Every full
collection of Python's cyclic garbage collector walks them all (~0.3 s on a 2-core machine), and
Trainer.train() forces one at the start of every run, inside the training phase. Freezing them
(gc.freeze) skips that walk; frozen objects are still freed by reference counting.
"""

from __future__ import annotations

import gc

_state = {"frozen": False}


def load_training_stack() -> None:
    """Import what a training run uses. transformers and peft load lazily, so the names a run
    touches are named here; a plain ``import transformers`` would leave most of it for later."""
    from peft import LoraConfig, PeftModel, get_peft_model  # noqa: F401
    from transformers import (  # noqa: F401
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
    )

    import worker.engine.trainer  # noqa: F401


def freeze_imports() -> int:
    """Collect once, then move every object alive now out of the collector's reach. Call it after the
    imports and before any run's objects exist, so that nothing short-lived is frozen with them.
    Idempotent; returns how many objects are frozen."""
    if not _state["frozen"]:
        gc.collect()
        gc.freeze()
        _state["frozen"] = True
    return gc.get_freeze_count()
