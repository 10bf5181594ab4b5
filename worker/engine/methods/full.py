"""Full fine-tuning: every parameter of the base model trains; the artifact is the whole model."""

from __future__ import annotations

from pathlib import Path

import torch

from worker.engine.methods.base import MethodError


class Full:
    name = "full"

    def check(self, tuning, *, task: str, device: str) -> None:
        if tuning.target_modules != "auto":
            raise MethodError("full fine-tuning trains every layer; target_modules does not apply",
                              param="tuning.target_modules")

    def base_model_kwargs(self, tuning) -> dict:
        return {}

    def build(self, model, tuning, *, task: str, modules_to_save: list[str] | None = None):
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def resume(self, base_model, adapter_dir: Path, tuning, *, task: str):
        # A full fine-tune is a new base: its weights are the model_dir, never an adapter to load.
        raise MethodError("a full fine-tune continues from the earlier model's weights, not an adapter",
                          param="model")

    def save(self, model, output_dir: Path) -> None:
        # transformers writes model.safetensors (sharded when large) and config.json.
        model.save_pretrained(str(output_dir))

    def load(self, base_model, artifact_dir: Path | str):
        """The saved model itself, of the base model's class; the base model's weights are not used."""
        return type(base_model).from_pretrained(
            str(artifact_dir), use_safetensors=True, trust_remote_code=False,
            dtype=next(base_model.parameters()).dtype if base_model is not None else torch.float32,
        )
