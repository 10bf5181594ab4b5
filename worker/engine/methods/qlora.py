"""QLoRA (Dettmers et al., 2023): LoRA on a base model quantized to 4-bit NF4 with bitsandbytes.

bitsandbytes is CUDA-only and not a project requirement: it is imported lazily, and `check` refuses a
qlora job on a worker without a CUDA GPU or without bitsandbytes.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

from worker.engine.methods.base import MethodError
from worker.engine.methods.lora import HEAD_NAMES, build_lora, load_peft


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _for_kbit_training(model):
    from peft import prepare_model_for_kbit_training

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        return prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False}
        )


class QLora:
    name = "qlora"

    def check(self, tuning, *, task: str, device: str | None) -> None:
        if device is None:
            return  # no machine yet (prepare): routing and the training worker check the GPU
        if device != "cuda" or not _cuda_available():
            raise MethodError("qlora needs a CUDA GPU; this worker has none — use lora", param="tuning.type")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise MethodError(
                "qlora needs the bitsandbytes package, which this worker lacks — install it or use lora",
                param="tuning.type",
            )

    def base_model_kwargs(self, tuning) -> dict:
        import torch
        from transformers import BitsAndBytesConfig

        return {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16,
                bnb_4bit_use_double_quant=True,
                # Task heads stay in full precision: a new head must train in full.
                llm_int8_skip_modules=list(HEAD_NAMES),
            ),
            "dtype": torch.bfloat16,
            "device_map": {"": torch.cuda.current_device()},
        }

    def build(self, model, tuning, *, task: str, modules_to_save: list[str] | None = None):
        return build_lora(_for_kbit_training(model), tuning, task=task, modules_to_save=modules_to_save)

    def resume(self, base_model, adapter_dir: Path, tuning, *, task: str):
        return load_peft(_for_kbit_training(base_model), adapter_dir, trainable=True)

    def save(self, model, output_dir: Path) -> None:
        # The LoRA weights only (as lora): they apply to the full-precision base model as well.
        model.save_pretrained(str(output_dir))

    def load(self, base_model, artifact_dir: Path | str):
        return load_peft(base_model, artifact_dir)
