"""Bottleneck adapters (Houlsby et al., 2019, "Parameter-Efficient Transfer Learning for NLP").

Each adapter is ``x + up(act(down(x)))``: a down-projection to ``bottleneck_size`` features, a
nonlinearity and an up-projection back, with a residual connection. One goes after the attention
output and one after the feed-forward output of every layer, on the sublayer's output before the
layer adds its own residual and normalizes (BERT: after ``BertSelfOutput.dense`` / ``BertOutput.dense``;
llama: on the outputs of ``self_attn`` and ``mlp``). The up-projection starts at zero, so a fresh
adapter is the identity and the model starts as the base model. The base is frozen; adapters and a
classification head train.

peft has no such method, so this module writes its own artifact: ``adapter_model.safetensors`` (the
adapter and head weights only) and ``hubtune_adapter_config.json``, loaded back with
:func:`load_adapter_model`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from worker.engine.methods.base import MethodError
from worker.engine.methods.lora import heads_to_save

CONFIG_FILE = "hubtune_adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT = "hubtune-bottleneck-adapter/1"
DEFAULT_REDUCTION_FACTOR = 16
POSITIONS = ("attention", "ffn")
# Each layer keeps its adapters here, so their weights are named "<layer>.hubtune_adapters.<position>...".
CONTAINER = "hubtune_adapters"

NON_LINEARITIES = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class Layout:
    """Where the adapters go inside one layer: position -> path of the module whose output they take."""

    family: str
    hooks: dict[str, str]


_BERT = Layout("bert", {"attention": "attention.output.dense", "ffn": "output.dense"})
_DISTILBERT = Layout("distilbert", {"attention": "attention.out_lin", "ffn": "ffn.lin2"})
_DECODER = Layout("llama", {"attention": "self_attn", "ffn": "mlp"})
_GPT2 = Layout("gpt2", {"attention": "attn", "ffn": "mlp"})
_GPT_NEOX = Layout("gpt_neox", {"attention": "attention", "ffn": "mlp"})
LAYOUTS: dict[str, Layout] = {
    **{t: _BERT for t in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie")},
    "distilbert": _DISTILBERT,
    **{
        t: _DECODER
        for t in (
            "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2",
            "granite", "smollm3", "cohere", "phi3",
        )
    },
    "gpt2": _GPT2,
    "gpt_neox": _GPT_NEOX,
}


class BottleneckAdapter(nn.Module):
    """``x + up(act(down(x)))``; the up-projection starts at zero, so a new adapter is the identity."""

    def __init__(self, hidden_size: int, bottleneck_size: int, non_linearity: str) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck_size)
        self.act = NON_LINEARITIES[non_linearity]()
        self.up = nn.Linear(bottleneck_size, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x.to(self.down.weight.dtype)))).to(x.dtype)


def _adapter_hook(adapter: BottleneckAdapter):
    # Attention modules return (output, weights, ...): adapt the output only.
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (adapter(output[0]), *output[1:])
        return adapter(output)

    return hook


def _find_layout(model: nn.Module) -> tuple[Layout, nn.ModuleList]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    # An unknown model_type may still be laid out like a known family: try each family's layout.
    families = {layout.family: layout for layout in LAYOUTS.values()}
    candidates = [LAYOUTS[model_type]] if model_type in LAYOUTS else list(families.values())
    for layout in candidates:
        for module in model.modules():
            if isinstance(module, nn.ModuleList) and len(module) and all(
                _has(layer, path) for layer in module for path in layout.hooks.values()
            ):
                return layout, module
    supported = ", ".join(sorted(LAYOUTS))
    raise MethodError(
        f"adapter does not know where to insert adapters into a {type(model).__name__} "
        f"(model_type {model_type!r}); it supports BERT-style encoders and llama-style decoders: {supported}",
        param="tuning.type",
    )


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def _hidden_size(model: nn.Module) -> int:
    config = model.config
    for name in ("hidden_size", "n_embd", "dim", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise MethodError(f"cannot tell the hidden size of {type(model).__name__}", param="tuning.type")


def bottleneck_size(tuning, hidden_size: int) -> int:
    """``tuning.bottleneck_size``, else hidden_size / reduction_factor (default 16), at least 1."""
    if tuning.bottleneck_size is not None:
        return int(tuning.bottleneck_size)
    factor = tuning.reduction_factor or DEFAULT_REDUCTION_FACTOR
    return max(1, round(hidden_size / factor))


def insert_adapters(model: nn.Module, *, size: int, non_linearity: str, positions=POSITIONS) -> dict:
    """Add a fresh adapter at each position of every layer of ``model`` (in place); returns the
    facts the config file records."""
    layout, layers = _find_layout(model)
    hidden = _hidden_size(model)
    reference = next(model.parameters())
    for layer in layers:
        if hasattr(layer, CONTAINER):
            raise ValueError("this model already has adapters")
        adapters = nn.ModuleDict(
            {p: BottleneckAdapter(hidden, size, non_linearity) for p in positions}
        ).to(device=reference.device, dtype=reference.dtype if reference.is_floating_point() else torch.float32)
        layer.add_module(CONTAINER, adapters)
        for position in positions:
            layer.get_submodule(layout.hooks[position]).register_forward_hook(_adapter_hook(adapters[position]))
    return {
        "format": FORMAT,
        "bottleneck_size": size,
        "non_linearity": non_linearity,
        "positions": list(positions),
        "layout": layout.family,
        "hooks": {p: layout.hooks[p] for p in positions},
        "hidden_size": hidden,
        "num_layers": len(layers),
        "base_model_type": getattr(model.config, "model_type", None),
        "base_architecture": type(model).__name__,
    }


def _saved_keys(model: nn.Module, heads: list[str]) -> list[str]:
    marker = f".{CONTAINER}."
    return [
        key for key in model.state_dict()
        if marker in key or any(key == h or key.startswith(h + ".") for h in heads)
    ]


class Adapter:
    name = "adapter"

    def check(self, tuning, *, task: str, device: str) -> None:
        if tuning.target_modules != "auto":
            raise MethodError(
                "adapter places its modules after every attention and feed-forward block; "
                "target_modules is for lora and the peft methods",
                param="tuning.target_modules",
            )

    def base_model_kwargs(self, tuning) -> dict:
        return {}

    def build(self, model, tuning, *, task: str, modules_to_save: list[str] | None = None):
        heads = heads_to_save(model, task=task, modules_to_save=modules_to_save)
        for p in model.parameters():
            p.requires_grad_(False)
        config = insert_adapters(
            model, size=bottleneck_size(tuning, _hidden_size(model)), non_linearity=tuning.non_linearity
        )
        config["modules_to_save"] = heads
        config["task"] = task
        for name, p in model.named_parameters():
            if f".{CONTAINER}." in name or any(name.startswith(h + ".") for h in heads):
                p.requires_grad_(True)
        model.hubtune_adapter_config = config
        return model

    def resume(self, base_model, adapter_dir: Path, tuning, *, task: str):
        adapter_dir = Path(adapter_dir)
        if (adapter_dir / CONFIG_FILE).is_file():  # a job's artifact
            model = load_adapter_model(base_model, adapter_dir)
        else:  # a training checkpoint: the whole model's weights, the adapters and heads among them
            model = self.build(base_model, tuning, task=task)
            _load_checkpoint_adapters(model, adapter_dir)
        heads = model.hubtune_adapter_config.get("modules_to_save", [])
        for name, p in model.named_parameters():
            p.requires_grad_(f".{CONTAINER}." in name or any(name.startswith(h + ".") for h in heads))
        return model.train()

    def save(self, model, output_dir: Path) -> None:
        save_adapter(model, output_dir)

    def load(self, base_model, artifact_dir: Path | str):
        return load_adapter_model(base_model, artifact_dir)


def _load_checkpoint_adapters(model: nn.Module, folder: Path) -> None:
    """The adapter and head weights out of a checkpoint's model*.safetensors (every weight was saved)."""
    from safetensors.torch import load_file

    keys = set(_saved_keys(model, model.hubtune_adapter_config["modules_to_save"]))
    tensors: dict = {}
    for path in sorted(folder.glob("model*.safetensors")):
        tensors.update({k: v for k, v in load_file(str(path)).items() if k in keys})
    if missing := keys - set(tensors):
        raise ValueError(f"checkpoint {folder.name} lacks adapter weights {sorted(missing)[:5]}")
    model.load_state_dict(tensors, strict=False)


def save_adapter(model: nn.Module, output_dir: Path | str) -> None:
    """Write the adapter and head weights (safetensors) and the adapter config of a built model."""
    from safetensors.torch import save_file

    config = getattr(model, "hubtune_adapter_config", None)
    if config is None:
        raise ValueError("this model has no adapters (build it with the adapter method first)")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    keys = _saved_keys(model, config["modules_to_save"])
    tensors = {k: state[k].detach().to("cpu").contiguous().clone() for k in keys}
    save_file(tensors, str(output_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    (output_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_adapter_model(base_model, adapter_dir: Path | str):
    """The base model with the bottleneck adapters (and classification head) saved in ``adapter_dir``,
    in eval mode, ready for inference. ``base_model`` is the model the adapters were trained on,
    loaded with the same task head (e.g. ``AutoModelForSequenceClassification.from_pretrained(base,
    num_labels=...)``); it is changed in place and returned."""
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / CONFIG_FILE).read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{adapter_dir / CONFIG_FILE} is not a {FORMAT} config")
    base_type = getattr(getattr(base_model, "config", None), "model_type", None)
    if config.get("base_model_type") and base_type != config["base_model_type"]:
        raise ValueError(f"these adapters were trained on a {config['base_model_type']} model, not {base_type}")
    insert_adapters(
        base_model, size=config["bottleneck_size"], non_linearity=config["non_linearity"],
        positions=tuple(config["positions"]),
    )
    base_model.hubtune_adapter_config = config
    tensors = load_file(str(adapter_dir / WEIGHTS_FILE))
    expected = set(_saved_keys(base_model, config.get("modules_to_save", [])))
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ValueError(
            f"{adapter_dir / WEIGHTS_FILE} does not fit this base model: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    base_model.load_state_dict(tensors, strict=False)
    for p in base_model.parameters():
        p.requires_grad_(False)
    return base_model.eval()
