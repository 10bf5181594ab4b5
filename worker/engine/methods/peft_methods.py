"""Every other peft method by its peft config name (``ia3``, ``loha``, ``lokr``, ``vera``, ``oft``,
``boft``, ``fourierft``, ...), its config fields given in ``tuning.options``.

The names come from peft's own mapping, so a newer peft brings its new methods along. Options are
checked against the config dataclass's fields before any weight is loaded; ``target_modules`` is
filled from LoRA's per-architecture "auto" table when the user names none (IA3 also gets its
feed-forward modules).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

from hubtune.spec import UNSUPPORTED_PEFT
from worker.engine.methods.base import MethodError
from worker.engine.methods.lora import auto_target_modules, heads_to_save, load_peft, peft_task_type

# peft methods the trainer cannot run (the reasons live beside the API's list of tuning types), and
# peft's own lora, which is hubtune's built-in method.
UNSUPPORTED = {
    **UNSUPPORTED_PEFT,
    "lora": "lora is hubtune's own method (tuning.type 'lora' with r, alpha, dropout, use_dora, use_rslora)",
}
# Config fields that hubtune sets itself (or that describe the artifact): not user options.
INTERNAL_FIELDS = {
    "peft_type", "task_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
    "inference_mode",
}
# Methods whose target_modules are not Linear projections: peft's own defaults pick them.
OWN_TARGETS = {"ln_tuning", "trainable_tokens"}


def _config_classes() -> dict[str, type]:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(getattr(k, "value", k)).lower(): cls for k, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


def peft_method_names() -> list[str]:
    """The peft config names hubtune trains with (peft's mapping, less UNSUPPORTED)."""
    return sorted(name for name in _config_classes() if name not in UNSUPPORTED)


def lookup(name: str):
    """A method for peft config name `name` (the registry registers it on first use), or None
    when peft has no such method. A method peft has but hubtune cannot run raises MethodError."""
    if name in UNSUPPORTED and name != "lora":
        raise MethodError(UNSUPPORTED[name], param="tuning.type")
    classes = _config_classes()
    if name not in classes or name in UNSUPPORTED:
        return None
    return PeftMethod(name, classes[name])


class PeftMethod:
    """A peft method configured by ``tuning.options``; saved and loaded with peft."""

    def __init__(self, name: str, config_class: type) -> None:
        self.name = name
        self.config_class = config_class

    def option_names(self) -> list[str]:
        return sorted(f.name for f in dataclasses.fields(self.config_class) if f.name not in INTERNAL_FIELDS)

    def _fields(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self.config_class)}

    def check(self, tuning, *, task: str, device: str) -> None:
        valid = self.option_names()
        for key in tuning.options:
            if key not in valid:
                raise MethodError(
                    f"{self.name} has no option {key!r}; its options are: {', '.join(valid)}",
                    param=f"tuning.options.{key}",
                )
        if tuning.target_modules != "auto" and "target_modules" not in self._fields():
            raise MethodError(f"{self.name} takes no target_modules", param="tuning.target_modules")
        self._config(tuning, task=task, extra={})

    def _config(self, tuning, *, task: str, extra: dict):
        kwargs = {**extra, **tuning.options}
        if "task_type" in self._fields():
            kwargs["task_type"] = peft_task_type(task)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self.config_class(**kwargs)
        except (TypeError, ValueError) as exc:
            raise MethodError(f"invalid {self.name} options: {exc}", param="tuning.options") from exc

    def base_model_kwargs(self, tuning) -> dict:
        return {}

    def build(self, model, tuning, *, task: str, modules_to_save: list[str] | None = None):
        from peft import get_peft_model

        self.check(tuning, task=task, device="cpu")
        fields = self._fields()
        heads = heads_to_save(model, task=task, modules_to_save=modules_to_save)
        extra: dict = {}
        if "modules_to_save" in fields and heads:
            extra["modules_to_save"] = heads
        if "target_modules" in fields and "target_modules" not in tuning.options and self.name not in OWN_TARGETS:
            if tuning.target_modules != "auto":
                extra["target_modules"] = list(tuning.target_modules)
            else:
                extra["target_modules"] = auto_target_modules(model, exclude=heads)
                if "feedforward_modules" in fields and "feedforward_modules" not in tuning.options:
                    extra["target_modules"], extra["feedforward_modules"] = _ia3_modules(
                        model, extra["target_modules"]
                    )
        config = self._config(tuning, task=task, extra=extra)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)
                warnings.filterwarnings("ignore", category=UserWarning)
                return get_peft_model(model, config)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise MethodError(f"{self.name} cannot be applied to this model: {exc}", param="tuning.options") from exc

    def resume(self, base_model, adapter_dir: Path, tuning, *, task: str):
        return load_peft(base_model, adapter_dir, trainable=True)

    def save(self, model, output_dir: Path) -> None:
        model.save_pretrained(str(output_dir))

    def load(self, base_model, artifact_dir: Path | str):
        return load_peft(base_model, artifact_dir)


def _ia3_modules(model, targets: list[str]) -> tuple[list[str], list[str]]:
    """(target_modules, feedforward_modules) for IA3: the auto targets plus peft's per-architecture
    feed-forward layers (whose inputs IA3 scales), which must be among the targets."""
    from peft.utils import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    feedforward = list(FEEDFORWARD.get(model_type, []))
    return targets + [m for m in feedforward if m not in targets], feedforward
