"""Training memory from a model's config.json alone (no weights, no torch): what a job will need.

The parts, in bytes, as the worker trains (worker/engine/trainer.py loads the base model in float32;
"bf16" is autocast over those float32 weights, as transformers' Trainer does with ``bf16=True``):

- ``weights``: every parameter torch builds, including a trained head's frozen original that peft keeps
  beside its trainable copy (``modules_to_save``). float32 for "fp32" and "bf16"; for "4bit" (qlora)
  the base's Linear layers in NF4 (half a byte per weight plus one byte per 64-weight block for the
  double-quantised scale), the rest of the base in bf16 and the trained parameters in float32.
- ``gradients``: one float32 gradient per trainable parameter.
- ``optimizer``: AdamW's exp_avg and exp_avg_sq, two float32 values per trainable parameter (its
  per-tensor scalar ``step`` counters are ignored).
- ``activations``: what the backward pass keeps for ``batch_size`` x ``seq_len`` tokens: per layer
  and token the projections' inputs and outputs, the MLP's intermediate tensors, LoRA's dropout
  outputs, and rows of attention scores/probabilities (``heads x seq_len`` each: BERT with attention
  dropout keeps four, as the CPU/math attention path does; fused GPU kernels keep none, so this errs
  high there), plus one layer's activation gradients during backward; with gradient checkpointing
  only each layer's input plus, twice, one layer's set (recomputed, and its gradients). For causal_lm
  also the float32 logits and the loss's copy of them. 2 bytes per value under bf16/4bit, 4 under
  fp32. An approximation (bench/memory_estimator.py compares it with measured peaks), unlike the
  three parts above which are exact.
- ``overhead``: ``OVERHEAD_FRACTION`` of the four parts (allocator fragmentation, temporary buffers of
  kernels, the autocast weight copies) plus ``RUNTIME_BYTES`` (CUDA context or the Python/torch runtime).

DPO (``method="dpo"``) feeds each pair's chosen and rejected replies as one batch of ``2 x batch_size``
sequences, so its activations are those of twice the batch; the reference model's two forward passes
run without gradients and hold one layer's activations at a time (added on top). With lora/qlora the
reference is the base with the adapter switched off (no more weights); full fine-tuning keeps a frozen
float32 copy of the base model, added to ``weights``.

Parameter counts follow what transformers builds for ``AutoModelForSequenceClassification`` /
``AutoModelForCausalLM`` and what peft adds; tests/engine/test_estimator_vs_torch.py checks them
against torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from hubtune.errors import JobError
from hubtune.spec import JobRequest, Tuning

Precision = Literal["fp32", "bf16", "4bit"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "4bit")

OVERHEAD_FRACTION = 0.15
RUNTIME_BYTES = 256 * 1024**2
# Batch size for a request whose batch_size is "auto" when the data is not known: the largest the
# worker's auto rule picks (worker/engine/hparams.py MAX_AUTO_BATCH_SIZE), so the estimate is an upper bound.
DEFAULT_AUTO_BATCH_SIZE = 16
DEFAULT_NUM_LABELS = 2
# Houlsby adapters: hidden_size / this when neither bottleneck_size nor reduction_factor is given.
DEFAULT_REDUCTION_FACTOR = 16
NF4_BLOCK = 64  # bitsandbytes' 4-bit block size; one (double-quantised, 1-byte) scale per block

BERT_TYPES = ("bert",)
DECODER_TYPES = ("llama", "mistral", "qwen2")
SUPPORTED_TYPES = BERT_TYPES + DECODER_TYPES
# target_modules="auto" per family, as worker/engine/methods/lora.py picks them.
AUTO_TARGETS = {
    "bert": ("query", "key", "value", "dense"),
    "decoder": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}
TASKS = ("sequence_classification", "causal_lm")


class EstimateError(JobError, ValueError):
    """A config or request the estimator cannot estimate; `param` names the request field."""

    code = "cannot_estimate"

    def __init__(self, message: str, *, param: str = "model") -> None:
        super().__init__(self.code, message, param)


@dataclass(frozen=True)
class Linear:
    name: str
    in_features: int
    out_features: int
    bias: bool

    @property
    def numel(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass
class Architecture:
    """The parameters of the model a task builds: Linear layers by name, everything else by count."""

    family: Literal["bert", "decoder"]
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_dim: int
    q_dim: int
    intermediate: int
    vocab: int
    attention_dropout: bool = False
    linears: list[Linear] = field(default_factory=list)
    others: dict[str, int] = field(default_factory=dict)  # name -> number of values (embeddings, norms)
    head: list[str] = field(default_factory=list)  # the task head's Linear names (a new, trained module)

    @property
    def total(self) -> int:
        return sum(lin.numel for lin in self.linears) + sum(self.others.values())

    def head_params(self) -> int:
        return sum(lin.numel for lin in self.linears if lin.name in self.head)


class MemoryEstimate(BaseModel):
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    overhead_bytes: int
    total_bytes: int
    params_total: int
    params_trainable: int
    precision: str
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    tuning_type: str
    task: str
    method: str = "supervised"

    def parts(self) -> dict[str, int]:
        return {
            "weights_bytes": self.weights_bytes,
            "gradients_bytes": self.gradients_bytes,
            "optimizer_bytes": self.optimizer_bytes,
            "activations_bytes": self.activations_bytes,
            "overhead_bytes": self.overhead_bytes,
        }

    def summary(self) -> str:
        return (
            f"{format_bytes(self.total_bytes)} ({self.tuning_type}{', DPO' if self.method == 'dpo' else ''}, "
            f"{self.precision}, batch {self.batch_size} "
            f"x {self.seq_len} tokens{', gradient checkpointing' if self.gradient_checkpointing else ''}: "
            f"weights {format_bytes(self.weights_bytes)}, gradients {format_bytes(self.gradients_bytes)}, "
            f"optimizer {format_bytes(self.optimizer_bytes)}, activations {format_bytes(self.activations_bytes)})"
        )


def format_bytes(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


# --- reading config.json -----------------------------------------------------------------------------


def _get(config: dict[str, Any], key: str, default: Any = None, *, required: bool = True) -> Any:
    value = config.get(key, default)
    if value is None and required:
        raise EstimateError(f"the model's config.json has no {key!r}; the memory estimate needs it")
    if value is not None and not isinstance(value, (int, float, bool)):
        raise EstimateError(f"the model's config.json has a non-numeric {key!r}: {value!r}")
    return value


def default_task(config: dict[str, Any]) -> str:
    """The task a request without one is estimated for: causal_lm for decoders, else classification."""
    return "causal_lm" if config.get("model_type") in DECODER_TYPES else "sequence_classification"


def architecture(config: dict[str, Any], *, task: str, num_labels: int = DEFAULT_NUM_LABELS) -> Architecture:
    """The parameters of the model transformers builds from `config` for `task`."""
    if not isinstance(config, dict):
        raise EstimateError("the model's config.json is not a JSON object")
    model_type = config.get("model_type")
    if task not in TASKS:
        raise EstimateError(f"unknown task {task!r}", param="task")
    if model_type in BERT_TYPES:
        if task != "sequence_classification":
            raise EstimateError(f"the estimator knows {model_type} models for sequence_classification only", param="task")
        return _bert(config, num_labels=num_labels)
    if model_type in DECODER_TYPES:
        return _decoder(config, task=task, num_labels=num_labels)
    raise EstimateError(
        f"the memory estimator cannot read model_type {model_type!r}; it knows {', '.join(SUPPORTED_TYPES)}"
    )


def _bert(config: dict[str, Any], *, num_labels: int) -> Architecture:
    h, n_layers = int(_get(config, "hidden_size")), int(_get(config, "num_hidden_layers"))
    inter, heads = int(_get(config, "intermediate_size")), int(_get(config, "num_attention_heads"))
    vocab, positions = int(_get(config, "vocab_size")), int(_get(config, "max_position_embeddings"))
    arch = Architecture(
        family="bert", model_type=config["model_type"], hidden=h, layers=n_layers, heads=heads,
        kv_dim=h, q_dim=h, intermediate=inter, vocab=vocab,
        attention_dropout=float(_get(config, "attention_probs_dropout_prob", 0.1)) > 0,
    )
    arch.others.update({
        "bert.embeddings.word_embeddings": vocab * h,
        "bert.embeddings.position_embeddings": positions * h,
        "bert.embeddings.token_type_embeddings": int(_get(config, "type_vocab_size", 2)) * h,
        "bert.embeddings.LayerNorm": 2 * h,
    })
    for i in range(n_layers):
        p = f"bert.encoder.layer.{i}"
        arch.linears += [
            Linear(f"{p}.attention.self.query", h, h, True),
            Linear(f"{p}.attention.self.key", h, h, True),
            Linear(f"{p}.attention.self.value", h, h, True),
            Linear(f"{p}.attention.output.dense", h, h, True),
            Linear(f"{p}.intermediate.dense", h, inter, True),
            Linear(f"{p}.output.dense", inter, h, True),
        ]
        arch.others[f"{p}.attention.output.LayerNorm"] = 2 * h
        arch.others[f"{p}.output.LayerNorm"] = 2 * h
    arch.linears.append(Linear("bert.pooler.dense", h, h, True))
    arch.linears.append(Linear("classifier", h, num_labels, True))
    arch.head = ["classifier"]
    return arch


def _decoder(config: dict[str, Any], *, task: str, num_labels: int) -> Architecture:
    model_type = config["model_type"]
    h, n_layers = int(_get(config, "hidden_size")), int(_get(config, "num_hidden_layers"))
    inter, heads = int(_get(config, "intermediate_size")), int(_get(config, "num_attention_heads"))
    kv_heads = int(_get(config, "num_key_value_heads", heads))
    vocab = int(_get(config, "vocab_size"))
    head_dim = int(config.get("head_dim") or h // heads)
    qkv_bias = model_type == "qwen2" or bool(config.get("attention_bias", False))
    mlp_bias = bool(config.get("mlp_bias", False))
    # transformers' default for llama/mistral/qwen2 is untied; a config may say otherwise.
    tied = bool(config.get("tie_word_embeddings", False))
    arch = Architecture(
        family="decoder", model_type=model_type, hidden=h, layers=n_layers, heads=heads,
        kv_dim=kv_heads * head_dim, q_dim=heads * head_dim, intermediate=inter, vocab=vocab,
        attention_dropout=float(_get(config, "attention_dropout", 0.0)) > 0,
    )
    arch.others["model.embed_tokens"] = vocab * h
    for i in range(n_layers):
        p = f"model.layers.{i}"
        arch.linears += [
            Linear(f"{p}.self_attn.q_proj", h, arch.q_dim, qkv_bias),
            Linear(f"{p}.self_attn.k_proj", h, arch.kv_dim, qkv_bias),
            Linear(f"{p}.self_attn.v_proj", h, arch.kv_dim, qkv_bias),
            Linear(f"{p}.self_attn.o_proj", arch.q_dim, h, bool(config.get("attention_bias", False))),
            Linear(f"{p}.mlp.gate_proj", h, inter, mlp_bias),
            Linear(f"{p}.mlp.up_proj", h, inter, mlp_bias),
            Linear(f"{p}.mlp.down_proj", inter, h, mlp_bias),
        ]
        arch.others[f"{p}.input_layernorm"] = h
        arch.others[f"{p}.post_attention_layernorm"] = h
    arch.others["model.norm"] = h
    if task == "sequence_classification":
        arch.linears.append(Linear("score", h, num_labels, False))
        arch.head = ["score"]
    elif not tied:
        arch.linears.append(Linear("lm_head", h, vocab, False))
    return arch


# --- the tuning methods' parameters -----------------------------------------------------------------


@dataclass
class Plan:
    """Counts per kind of parameter for one method on one architecture."""

    base: int  # the base model's own parameters (including a new head's frozen original under peft)
    base_quantizable: int  # of which Linear weights inside the layers (4-bit under qlora)
    added: int  # parameters the method adds (LoRA A/B, adapters, the head's trainable copy)
    trainable: int
    lora_targets: list[Linear] = field(default_factory=list)


def _matches(name: str, key: str) -> bool:
    # peft's rule for a list of target_modules: the full name or its last dotted parts.
    return name == key or name.endswith("." + key)


def lora_targets(arch: Architecture, tuning: Tuning) -> list[Linear]:
    keys = AUTO_TARGETS[arch.family] if tuning.target_modules == "auto" else tuning.target_modules
    candidates = [lin for lin in arch.linears if lin.name not in arch.head and lin.name != "lm_head"]
    if tuning.target_modules != "auto":
        candidates = list(arch.linears)
    targets = [lin for lin in candidates if any(_matches(lin.name, k) for k in keys)]
    if not targets:
        names = sorted({lin.name.rsplit(".", 1)[-1] for lin in arch.linears})
        raise EstimateError(
            f"tuning.target_modules {list(keys)} match no layer of this model; its Linear layers are named: "
            f"{', '.join(names)}",
            param="tuning.target_modules",
        )
    return targets


def method_plan(arch: Architecture, tuning: Tuning, *, task: str) -> Plan:
    base = arch.total
    quantizable = sum(lin.in_features * lin.out_features for lin in arch.linears
                      if lin.name not in arch.head and lin.name != "lm_head")
    head = arch.head_params()
    kind = tuning.type
    if kind == "full":
        return Plan(base=base, base_quantizable=0, added=0, trainable=base)
    if kind in ("lora", "qlora"):
        targets = lora_targets(arch, tuning)
        lora = sum(tuning.r * (lin.in_features + lin.out_features) + (lin.out_features if tuning.use_dora else 0)
                   for lin in targets)
        # peft trains a copy of the new head (modules_to_save) and keeps the original beside it.
        return Plan(base=base, base_quantizable=quantizable if kind == "qlora" else 0, added=lora + head,
                    trainable=lora + head, lora_targets=targets)
    if kind == "adapter":
        size = tuning.bottleneck_size or max(1, round(arch.hidden / (tuning.reduction_factor or DEFAULT_REDUCTION_FACTOR)))
        # Two bottleneck adapters per layer (after attention and after the feed-forward block): down + up.
        adapters = arch.layers * 2 * (2 * arch.hidden * size + size + arch.hidden)
        return Plan(base=base, base_quantizable=0, added=adapters, trainable=adapters + head)
    raise EstimateError(
        f"the memory estimator knows tuning.type lora, qlora, adapter and full, not {kind!r}", param="tuning.type"
    )


# --- the estimate -------------------------------------------------------------------------------------


def estimate(
    *,
    config: dict[str, Any],
    tuning: Tuning,
    task: str,
    num_labels: int = DEFAULT_NUM_LABELS,
    precision: Precision = "fp32",
    batch_size: int,
    seq_len: int,
    gradient_checkpointing: bool = False,
    method: str = "supervised",
) -> MemoryEstimate:
    """Bytes one training process needs for this model, method, precision, batch and sequence length
    (``method`` "dpo": see the module docstring)."""
    if precision not in PRECISIONS:
        raise EstimateError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}", param="training.bf16")
    if (precision == "4bit") != (tuning.type == "qlora"):
        raise EstimateError("precision '4bit' goes with tuning.type 'qlora' and only with it", param="tuning.type")
    if batch_size < 1 or seq_len < 1:
        raise EstimateError("batch_size and seq_len must be at least 1", param="training")
    arch = architecture(config, task=task, num_labels=num_labels)
    plan = method_plan(arch, tuning, task=task)
    weights = _weight_bytes(plan, precision)
    grads = 4 * plan.trainable
    optimizer = 2 * 4 * plan.trainable
    dpo = method == "dpo"
    acts = _activation_bytes(arch, plan, tuning, task=task, precision=precision,
                             batch_size=2 * batch_size if dpo else batch_size, seq_len=seq_len,
                             checkpointing=gradient_checkpointing)
    if dpo:
        acts += _reference_pass_bytes(arch, precision=precision, batch_size=batch_size, seq_len=seq_len)
        if tuning.type == "full":
            weights += 4 * plan.base  # the frozen reference copy (worker/engine/dpo.py)
    parts = weights + grads + optimizer + acts
    overhead = math.ceil(OVERHEAD_FRACTION * parts) + RUNTIME_BYTES
    return MemoryEstimate(
        weights_bytes=weights, gradients_bytes=grads, optimizer_bytes=optimizer, activations_bytes=acts,
        overhead_bytes=overhead, total_bytes=parts + overhead, params_total=plan.base + plan.added,
        params_trainable=plan.trainable, precision=precision, batch_size=batch_size, seq_len=seq_len,
        gradient_checkpointing=gradient_checkpointing, tuning_type=tuning.type, task=task, method=method,
    )


def _reference_pass_bytes(arch: Architecture, *, precision: str, batch_size: int, seq_len: int) -> int:
    """DPO's reference forward over chosen and rejected (no gradients): one layer's hidden states in
    flight and its log-probabilities per token, beside what the policy's pass keeps."""
    per_value = 4 if precision == "fp32" else 2
    tokens = 2 * batch_size * seq_len
    return tokens * (4 * arch.hidden + 2 * arch.intermediate) * per_value + tokens * 4


def _weight_bytes(plan: Plan, precision: str) -> int:
    if precision != "4bit":
        return 4 * (plan.base + plan.added)
    quantized = plan.base_quantizable // 2 + math.ceil(plan.base_quantizable / NF4_BLOCK)
    return quantized + 2 * (plan.base - plan.base_quantizable) + 4 * plan.added


def _activation_bytes(
    arch: Architecture, plan: Plan, tuning: Tuning, *, task: str, precision: str, batch_size: int, seq_len: int,
    checkpointing: bool,
) -> int:
    per_value = 4 if precision == "fp32" else 2
    h, inter, s = arch.hidden, arch.intermediate, seq_len
    if arch.family == "bert":
        # Layer input, q/k/v, context, the attention output's dropout and LayerNorm input, the MLP's
        # input, dense output, GELU output, dropout and LayerNorm input; attention scores and
        # probabilities, and with attention dropout its mask and the dropped probabilities too.
        per_layer = 9 * h + 2 * inter + (4 if arch.attention_dropout else 2) * arch.heads * s
    else:
        # RMSNorms in and out, q/k/v (and their rotary copies), attention output; gate, up, act, product.
        per_layer = 5 * h + 3 * arch.q_dim + 3 * arch.kv_dim + 4 * inter + arch.heads * s
    # Each LoRA layer keeps its own dropout output (and a byte mask: a quarter value) and its A output.
    dropped = 1.25 if tuning.dropout > 0 else 1.0
    per_layer += int(sum(lin.in_features * dropped + tuning.r for lin in plan.lora_targets) // max(1, arch.layers))
    tokens = batch_size * seq_len
    # Backward holds one layer's activation gradients beside what is kept; with checkpointing only each
    # layer's input is kept, and the layer being recomputed holds its activations and their gradients.
    if checkpointing:
        layers = arch.layers * h + 2 * per_layer
    else:
        layers = (arch.layers + 1) * per_layer
    values = tokens * (layers + 2 * h)  # + embeddings and the final norm
    total = values * per_value
    if task == "causal_lm":
        total += tokens * arch.vocab * (per_value + 8)  # logits, their float32 copy and the loss's
    return total


# --- from a job request -------------------------------------------------------------------------------


def request_batch_size(request: JobRequest) -> int:
    batch = request.effective_hyperparameters().batch_size
    return DEFAULT_AUTO_BATCH_SIZE if batch == "auto" else int(batch)


def request_precision(request: JobRequest, *, gpu: bool) -> Precision:
    """How the worker trains this request on a GPU (`gpu`) or a CPU worker."""
    if request.tuning.type == "qlora":
        return "4bit"
    return "bf16" if gpu and request.training.bf16 is not False else "fp32"


def request_task(request: JobRequest, *, config: dict[str, Any], data_task: str | None = None) -> str:
    """The task a request trains: its own; else its data's (known to prepare, which read the file);
    else the model family's usual one (the estimate endpoint, which reads no data)."""
    return request.task or data_task or default_task(config)


def estimate_request(
    request: JobRequest,
    *,
    config: dict[str, Any],
    gpu: bool,
    task: str | None = None,
    batch_size: int | None = None,
) -> MemoryEstimate:
    """The estimate for `request` as a GPU (or CPU) worker would train it: the one figure that the
    estimate endpoint shows and that prepare routes by, computed from the request alone so that both
    give the same figure for the same body. Per-step sizes are the request's bounds: batch_size "auto"
    counts as DEFAULT_AUTO_BATCH_SIZE (the largest the worker's auto rule picks; a small data set gets a
    smaller batch) and every sequence as max_seq_length tokens (packing fills rows to it; without
    packing a batch is padded to its longest example, which may be shorter). A classification head
    counts DEFAULT_NUM_LABELS labels (each further label adds hidden_size + 1 parameters). `task` is
    request_task's (prepare passes the data's for a request that names none); `batch_size` overrides
    the request's (routing's suggestions try smaller ones)."""
    return estimate(
        config=config,
        tuning=request.tuning,
        task=task or request_task(request, config=config),
        num_labels=DEFAULT_NUM_LABELS,
        precision=request_precision(request, gpu=gpu),
        batch_size=batch_size or request_batch_size(request),
        seq_len=request.training.max_seq_length,
        gradient_checkpointing=request.training.gradient_checkpointing,
        method=request.method_type,
    )
