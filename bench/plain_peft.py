"""A plain transformers + peft fine-tuning script: the baseline the benchmarks hold hubtune against.

Written the way one trains by hand (AutoModel + LoraConfig + Trainer, pad to the longest in the
batch, no hubtune code at all), with the same data, LoRA settings, steps, batch, learning rate and
seed as the hubtune job it is compared with. ``plain_train`` returns where its time went:
load (tokenizer, model, LoRA), tokenize, train (trainer.train(): the optimizer steps, and one
checkpoint at the last step as the hubtune job saves), evaluate, save.

    python bench/plain_peft.py SPEC_JSON     # prints the result as JSON (what the benches run)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

# LoRA targets as hubtune's "auto" picks them for these architectures, and the new classification head.
TARGETS = {"bert": ["query", "key", "value", "dense"],
           "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def _encode_classification(tokenizer, rows, label2id, max_len):
    return [{**tokenizer(r["text"], truncation=True, max_length=max_len), "labels": label2id[r["label"]]}
            for r in rows]


def _encode_completion(tokenizer, rows, max_len):
    """bos + prompt + completion + eos, the prompt masked out of the loss."""
    out = []
    for r in rows:
        prompt = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        full = tokenizer(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]
        ids = [tokenizer.bos_token_id] + full + [tokenizer.eos_token_id]
        labels = [-100] * (1 + len(prompt)) + ids[1 + len(prompt):]
        out.append({"input_ids": ids[:max_len], "labels": labels[:max_len]})
    return [f for f in out if any(x != -100 for x in f["labels"])]


class PadToLongest:
    """Pads a batch to its longest example; notes each batch's real (non-padding) tokens and positions."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id
        self.batch_tokens: list[int] = []  # in the order the batches were made (= the steps' order)
        self.batch_positions: list[int] = []

    def __call__(self, features):
        import torch

        n = max(len(f["input_ids"]) for f in features)
        ids, mask, labels = [], [], []
        for f in features:
            k = len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_id] * (n - k))
            mask.append([1] * k + [0] * (n - k))
            lab = f["labels"]
            labels.append(lab if isinstance(lab, int) else list(lab) + [-100] * (n - k))
        self.batch_tokens.append(sum(len(f["input_ids"]) for f in features))
        self.batch_positions.append(n * len(features))
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}


def plain_train(spec: dict, *, encode_causal=None, keep: dict | None = None) -> dict:
    """spec: model_dir, task, train_rows, valid_rows (or None), steps, batch, lr, seed, max_len,
    output_dir, r, alpha, dropout; optional bf16, gradient_checkpointing, device.
    ``encode_causal(tokenizer, row, max_len=)`` encodes causal rows of any format (chat too) instead of
    the prompt/completion encoder; ``keep`` (a dict) receives the trained ``model`` and ``tokenizer``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                              TrainingArguments, set_seed)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    t = {"start": time.monotonic()}
    set_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    classification = spec["task"] == "sequence_classification"
    if classification:
        labels = sorted({r["label"] for r in spec["train_rows"]})
        label2id = {lab: i for i, lab in enumerate(labels)}
        model = AutoModelForSequenceClassification.from_pretrained(
            spec["model_dir"], num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id,
            dtype=torch.float32)
        save, task_type = ["classifier"], "SEQ_CLS"
    else:
        model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
        save, task_type = None, "CAUSAL_LM"
    targets = TARGETS[model.config.model_type]
    model = get_peft_model(model, LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                                             target_modules=targets, modules_to_save=save, task_type=task_type))
    t["load"] = time.monotonic()

    def encode(rows):
        if classification:
            return _encode_classification(tokenizer, rows, label2id, spec["max_len"])
        if encode_causal is not None:
            return [encode_causal(tokenizer, r, max_len=spec["max_len"]) for r in rows]
        return _encode_completion(tokenizer, rows, spec["max_len"])

    train_ds = encode(spec["train_rows"])
    valid_ds = encode(spec["valid_rows"]) if spec.get("valid_rows") else None
    t["tokenize"] = time.monotonic()
    collator = PadToLongest(tokenizer.pad_token_id)
    gc = bool(spec.get("gradient_checkpointing"))
    args = TrainingArguments(
        output_dir=str(spec["output_dir"]), max_steps=spec["steps"], per_device_train_batch_size=spec["batch"],
        per_device_eval_batch_size=spec["batch"], learning_rate=spec["lr"], lr_scheduler_type="linear",
        seed=spec["seed"], data_seed=spec["seed"], logging_steps=10, save_strategy="steps",
        save_steps=spec["steps"], report_to="none", disable_tqdm=True, remove_unused_columns=False,
        bf16=bool(spec.get("bf16")),
        **({"activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": False}}
           if gc else {}),
        dataloader_pin_memory=torch.cuda.is_available(), use_cpu=spec.get("device") == "cpu",
    )
    clock = StepClock()
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=valid_ds, data_collator=collator,
                      callbacks=[clock.callback()])
    t["setup"] = time.monotonic()
    out = trainer.train()
    t["train"] = time.monotonic()
    # The batches the steps consumed (the data loader may have collated one more ahead).
    steps = int(trainer.state.global_step)
    tokens, positions = sum(collator.batch_tokens[:steps]), sum(collator.batch_positions[:steps])
    eval_loss = trainer.evaluate()["eval_loss"] if valid_ds else None
    t["evaluate"] = time.monotonic()
    model.save_pretrained(spec["output_dir"])
    tokenizer.save_pretrained(spec["output_dir"])
    t["save"] = time.monotonic()
    if keep is not None:
        keep.update(model=model, tokenizer=tokenizer)
    names = ["start", "load", "tokenize", "setup", "train", "evaluate", "save"]
    phases = {f"{b}_s": round(t[b] - t[a], 4) for a, b in zip(names, names[1:])}
    return {"phases": phases, "train_phase_s": phases["train_s"], "total_s": round(t["save"] - t["start"], 4),
            "train_loss": float(out.training_loss), "eval_loss": eval_loss, "trained_tokens": tokens,
            "fed_positions": positions, "steps": steps,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "steady": steady_rate(clock.times, collator.batch_tokens, skip=spec.get("skip_steps", 0))}


class StepClock:
    """When each optimizer step ended (on the accelerator's clock: synchronised first)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class _Cb(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                clock.times.append(time.monotonic())

        return _Cb()


def steady_rate(times: list[float], batch_tokens: list[int], *, skip: int) -> dict:
    """Tokens per second over steps skip+1..last (the first steps pay CUDA/kernel warm-up)."""
    if len(times) <= skip + 1:
        return {}
    first = max(skip, 1) - 1  # the window starts when step `first+1` ended
    seconds = times[-1] - times[first]
    tokens = sum(batch_tokens[first + 1:len(times)])
    return {"steps": len(times) - first - 1, "seconds": round(seconds, 4), "tokens": tokens,
            "tokens_per_s": tokens / seconds if seconds > 0 else None}


if __name__ == "__main__":
    spec = json.loads(sys.argv[1]) if not sys.argv[1].startswith("@") else json.loads(Path(sys.argv[1][1:]).read_text())
    began = time.monotonic()
    result = plain_train(spec)
    print("RESULT " + json.dumps(result))
