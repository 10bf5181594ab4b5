"""LoRA (Hu et al.) through peft: low-rank updates on the attention and MLP projections."""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn


# Leaf module names that target_modules="auto" picks, per config.model_type.
_BERT_LIKE = ["query", "key", "value", "dense"]
_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ARCHITECTURE_TARGETS: dict[str, list[str]] = {
    **{t: _BERT_LIKE for t in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie")},
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    **{
        t: _LLAMA_LIKE
        for t in (
            "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2",
            "granite", "smollm3", "cohere",
        )
    },
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}
# Task heads: trained in full (modules_to_save) when new, never given LoRA layers by "auto".
HEAD_NAMES = ("classifier", "score", "lm_head", "qa_outputs")
CLASSIFICATION_HEADS = ("classifier", "score")


def _linear_modules(model: nn.Module) -> dict[str, nn.Module]:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        Conv1D = ()  # noqa: N806
    kinds = (nn.Linear, Conv1D) if Conv1D else (nn.Linear,)
    return {name: module for name, module in model.named_modules() if isinstance(module, kinds)}


def _is_head(name: str, extra: list[str]) -> bool:
    first = name.split(".")[0]
    return first in HEAD_NAMES or any(name == m or name.startswith(m + ".") for m in extra)


def auto_target_modules(model: nn.Module, *, exclude: list[str] | None = None) -> list[str]:
    """Leaf names of the projections to adapt: the architecture's list when the model has those
    layers, else every Linear (or GPT-2 Conv1D) layer name outside the task heads."""
    exclude = list(exclude or [])
    linear = {name: m for name, m in _linear_modules(model).items() if not _is_head(name, exclude)}
    present = {name.rsplit(".", 1)[-1] for name in linear}
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    preferred = [leaf for leaf in ARCHITECTURE_TARGETS.get(model_type, []) if leaf in present]
    if preferred:
        return preferred
    if not present:
        raise ValueError("the model has no Linear layers for LoRA to adapt")
    # A leaf name that other (non-Linear) modules also carry, such as "0" in a Sequential, would
    # match those too: name its Linear layers in full instead.
    linear_ids = {id(m) for m in linear.values()}
    shared = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name and id(module) not in linear_ids and name.rsplit(".", 1)[-1] in present
    }
    targets = sorted(present - shared)
    targets += sorted(name for name in linear if name.rsplit(".", 1)[-1] in shared)
    return targets


def classification_heads(model: nn.Module) -> list[str]:
    return [name for name in CLASSIFICATION_HEADS if isinstance(getattr(model, name, None), nn.Module)]


class Lora:
    name = "lora"

    def check(self, tuning, *, task: str, device: str) -> None:
        return None

    def base_model_kwargs(self, tuning) -> dict:
        return {}

    def build(self, model, tuning, *, task: str, modules_to_save: list[str] | None = None):
        return build_lora(model, tuning, task=task, modules_to_save=modules_to_save)

    def resume(self, base_model, adapter_dir: Path, tuning, *, task: str):
        return load_peft(base_model, adapter_dir, trainable=True)

    def save(self, model, output_dir: Path) -> None:
        model.save_pretrained(str(output_dir))

    def load(self, base_model, artifact_dir: Path | str):
        return load_peft(base_model, artifact_dir)


def load_peft(base_model, adapter_dir: Path | str, *, trainable: bool = False):
    """A saved peft adapter (an artifact or a checkpoint folder) on ``base_model``; ``trainable``: its
    weights train further (peft's is_trainable), as a continued job needs."""
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=trainable)


def heads_to_save(model, *, task: str, modules_to_save: list[str] | None = None) -> list[str]:
    """The modules trained in full and saved with the artifact: the classification head (new or
    not) and whatever the base checkpoint lacked."""
    if task == "sequence_classification":
        save = classification_heads(model)
    elif task == "causal_lm":
        save = []
    else:
        raise ValueError(f"unknown task {task!r}")
    for name in modules_to_save or []:
        if name not in save:
            save.append(name)
    return save


def peft_task_type(task: str):
    from peft import TaskType

    return {"sequence_classification": TaskType.SEQ_CLS, "causal_lm": TaskType.CAUSAL_LM}[task]


def build_lora(model, tuning, *, task: str, modules_to_save: list[str] | None = None):
    """Wrap ``model`` in a peft LoRA model per ``tuning`` (r, alpha, dropout, target_modules,
    use_dora, use_rslora)."""
    from peft import LoraConfig, get_peft_model

    save = heads_to_save(model, task=task, modules_to_save=modules_to_save)
    task_type = peft_task_type(task)

    if tuning.target_modules == "auto":
        targets = auto_target_modules(model, exclude=save)
    else:
        targets = list(tuning.target_modules)
    config = LoraConfig(
        r=tuning.r,
        lora_alpha=tuning.alpha,
        lora_dropout=tuning.dropout,
        target_modules=targets,
        modules_to_save=save or None,
        task_type=task_type,
        use_dora=tuning.use_dora,
        use_rslora=tuning.use_rslora,
    )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, config)
    except ValueError as exc:
        if tuning.target_modules == "auto":
            raise
        names = sorted({n.rsplit(".", 1)[-1] for n in _linear_modules(model)})
        raise ValueError(
            f"tuning.target_modules {targets} matched no layer of this model ({exc}); "
            f"its Linear layers are named: {', '.join(names)}"
        ) from exc
