"""The job request: OpenAI's fine-tuning fields plus hubtune's own (task, tuning, training, hub).

Unknown fields are refused (extra="forbid") so that a typo never silently trains something else.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Auto = Literal["auto"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(StrictModel):
    n_epochs: Auto | Annotated[int, Field(ge=1, le=100)] = "auto"
    batch_size: Auto | Annotated[int, Field(ge=1, le=4096)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"


class Supervised(StrictModel):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class DpoHyperparameters(Hyperparameters):
    # DPO's temperature: how far the tuned model may move from the reference (the base model). "auto": 0.1,
    # trl's and the DPO paper's default. Above ~10 the loss is flat for any margin a model can reach.
    beta: Auto | Annotated[float, Field(gt=0, le=10)] = "auto"


class Dpo(StrictModel):
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


METHOD_TYPES = ("supervised", "dpo")
# DPO's reference is the base model: the adapter switched off (lora, qlora) or a frozen copy (full).
DPO_TUNING = ("lora", "qlora", "full")


class Method(StrictModel):
    """OpenAI's ``method``: ``{"type": "supervised"|"dpo", "<type>": {"hyperparameters": {...}}}``."""

    # "reinforcement" is accepted here only to be refused below with a sentence, not a bare enum error.
    type: Literal["supervised", "dpo", "reinforcement"] = "supervised"
    supervised: Supervised | None = None
    dpo: Dpo | None = None
    reinforcement: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_method(self) -> Method:
        if self.type == "reinforcement" or self.reinforcement is not None:
            raise ValueError("method type 'reinforcement' is not supported by hubtune; use 'supervised' or 'dpo'")
        for other in METHOD_TYPES:
            if other != self.type and getattr(self, other) is not None:
                raise ValueError(f"method.{other} was given but method.type is {self.type!r}")
        return self


# Methods hubtune builds itself.
BUILTIN_TUNING = ("lora", "qlora", "adapter", "full")
# The peft methods the worker trains, by peft config name: peft's own mapping less UNSUPPORTED_PEFT
# (worker/engine/methods/peft_methods.py). Listed here so that the API refuses an unknown tuning.type
# at create without importing peft; tests/engine/methods/test_tuning_types.py checks this list against
# the worker's registry with the installed peft (a newer peft's new methods are added here).
PEFT_TUNING = (
    "adamss", "adaption_prompt", "beft", "boft", "c3a", "cartridge", "deft", "delora", "fourierft", "frod",
    "glora", "gralora", "hira", "hra", "ia3", "lily", "ln_tuning", "loha", "lokr", "miss", "oft", "osf",
    "p_tuning", "peanut", "prefix_tuning", "prompt_tuning", "psoft", "pvera", "randlora", "road", "shadow",
    "shira", "supertuning", "tinylora", "trainable_tokens", "unilora", "vblora", "vera", "waveft",
)
# peft methods the trainer cannot run, and why (they need inputs or a training loop it does not have).
UNSUPPORTED_PEFT = {
    "adalora": "adalora re-allocates ranks from inside the training loop (update_and_allocate), "
    "which hubtune's trainer does not run; use lora",
    "xlora": "xlora mixes already trained LoRA adapters; it cannot train from a base model alone",
    "poly": "poly needs a task id per example, which the training data does not carry",
    "multitask_prompt_tuning": "multitask_prompt_tuning needs a task id per example",
    "cpt": "cpt needs token type masks that the training data does not carry",
}
TUNING_TYPES = tuple(sorted(BUILTIN_TUNING + PEFT_TUNING))


class Tuning(StrictModel):
    """How the model is tuned. Fields apply to the methods named in their comment."""

    # lora | qlora | adapter | full | a peft method by its config name (ia3, loha, lokr, vera, ...)
    type: str = Field(default="lora", min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")
    # lora, qlora
    r: int = Field(default=8, ge=1, le=512)
    alpha: float = Field(default=16.0, gt=0, le=4096)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: Auto | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = "auto"
    use_dora: bool = False
    use_rslora: bool = False
    # adapter (Houlsby et al. 2019): bottleneck_size, or hidden_size / reduction_factor
    bottleneck_size: int | None = Field(default=None, ge=1, le=65536)
    reduction_factor: float | None = Field(default=None, gt=0, le=4096)
    non_linearity: Literal["relu", "gelu", "swish", "tanh"] = "gelu"
    # any other peft method: fields of its peft config, checked against that config by the worker
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value in TUNING_TYPES:
            return value
        if value in UNSUPPORTED_PEFT:
            raise ValueError(UNSUPPORTED_PEFT[value])
        raise ValueError(f"unknown tuning type {value!r}; expected {', '.join(BUILTIN_TUNING)}, or a peft method "
                         f"by its config name: {', '.join(PEFT_TUNING)}")

    @model_validator(mode="after")
    def _one_adapter_size(self) -> Tuning:
        if self.bottleneck_size is not None and self.reduction_factor is not None:
            raise ValueError("give bottleneck_size or reduction_factor, not both")
        if self.options and self.type in BUILTIN_TUNING:
            raise ValueError(f"options are for peft methods other than {', '.join(BUILTIN_TUNING)}")
        return self


class Goal(StrictModel):
    """A target the tuned model should reach on the validation set, e.g. macro_f1 >= 0.8."""

    metric: str = Field(min_length=1, max_length=64)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _a_bound(self) -> Goal:
        if self.min is None and self.max is None:
            raise ValueError("a goal needs min or max")
        return self


class Training(StrictModel):
    learning_rate: float | None = Field(default=None, gt=0, le=1)
    max_seq_length: int = Field(default=256, ge=8, le=32768)
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    lr_scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = "linear"
    warmup_ratio: float = Field(default=0.0, ge=0, le=0.5)
    warmup_steps: int | None = Field(default=None, ge=0)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    logging_steps: int = Field(default=1, ge=1)
    # Checkpoint and evaluation intervals in optimizer steps; None means once per epoch.
    save_steps: int | None = Field(default=None, ge=1)
    eval_steps: int | None = Field(default=None, ge=1)
    # Stop when the validation loss has not improved for this many evaluations.
    early_stopping_patience: int | None = Field(default=None, ge=1, le=1000)
    # Held out of the training file for evaluation when there is no validation file.
    validation_split: float = Field(default=0.1, ge=0, le=0.5)
    # "auto": bf16 where the GPU supports it.
    bf16: Auto | bool = "auto"
    gradient_checkpointing: bool = False
    # causal_lm: a batch's examples laid end to end in rows of at most max_seq_length (worker/engine/packing.py).
    packing: bool = False
    # sequence_classification: "balanced" (inverse class frequency) or {label: weight}.
    class_weights: Literal["balanced"] | dict[str, Annotated[float, Field(gt=0)]] | None = None
    sampler: Literal["random", "weighted"] = "random"
    goal: Goal | None = None
    n_gpus: int = Field(default=1, ge=1, le=64)


class Hub(StrictModel):
    repo_id: str | None = Field(default=None, min_length=1, max_length=96)
    private: bool = True
    branch: str = Field(default="main", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._/-]+$")
    # Push each checkpoint to this branch while training.
    push_checkpoints: bool = False
    checkpoint_branch: str = Field(default="checkpoints", min_length=1, max_length=128,
                                   pattern=r"^[A-Za-z0-9._/-]+$")
    # lora: also push the base model with the adapter merged in (under merged/).
    merge: bool = False


# OpenAI's limits on a job's metadata.
METADATA_MAX_KEYS, METADATA_MAX_KEY_CHARS, METADATA_MAX_VALUE_CHARS = 16, 64, 512
INTEGRATION_TYPES = ("mlflow", "tensorboard", "wandb")


class WandbIntegration(StrictModel):
    """OpenAI's wandb integration. The worker runs wandb in the deployment's mode (offline by default)."""

    project: str = Field(min_length=1, max_length=128)
    name: str | None = Field(default=None, max_length=128)
    entity: str | None = Field(default=None, max_length=128)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=50)


class MlflowIntegration(StrictModel):
    """hubtune's MLflow integration: one run per job. tracking_uri must be one the deployment allows
    (hubtune.integrations); None means the deployment's own server."""

    experiment_name: str | None = Field(default=None, min_length=1, max_length=256)
    run_name: str | None = Field(default=None, min_length=1, max_length=256)
    tracking_uri: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")


class TensorboardIntegration(StrictModel):
    """TensorBoard event files in the artifact's runs/ folder; nothing to configure."""


class Integration(StrictModel):
    type: Literal["mlflow", "tensorboard", "wandb"]
    wandb: WandbIntegration | None = None
    mlflow: MlflowIntegration | None = None
    tensorboard: TensorboardIntegration | None = None

    @model_validator(mode="after")
    def _settings_match_type(self) -> Integration:
        others = [name for name in INTEGRATION_TYPES if name != self.type and getattr(self, name) is not None]
        if others:
            raise ValueError(f"an integration of type {self.type!r} cannot have {others[0]!r} settings")
        if self.type == "wandb" and self.wandb is None:
            raise ValueError("a wandb integration needs its 'wandb' settings (at least a project)")
        return self


class JobRequest(StrictModel):
    model: str = Field(min_length=1, max_length=256)
    # A file id, or a hub dataset file: hf://datasets/org/name@revision/path.jsonl
    training_file: str = Field(min_length=1, max_length=512)
    validation_file: str | None = Field(default=None, max_length=512)
    suffix: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9._-]*$")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    method: Method | None = None
    # OpenAI's older top-level hyperparameters; method.supervised.hyperparameters wins when both are set.
    hyperparameters: Hyperparameters | None = None
    # Up to 16 pairs, filterable in the job list (GET ...?metadata[key]=value), as OpenAI's.
    metadata: dict[str, Annotated[str, Field(max_length=METADATA_MAX_VALUE_CHARS)]] | None = None
    # Experiment tracking (OpenAI's field; mlflow and tensorboard are hubtune's): worker/tracking.py.
    integrations: list[Integration] | None = Field(default=None, max_length=len(INTEGRATION_TYPES))
    # None: decided from the training file's columns (label -> classification, messages/prompt -> causal LM).
    task: Literal["sequence_classification", "causal_lm"] | None = None
    tuning: Tuning = Field(default_factory=Tuning)
    training: Training = Field(default_factory=Training)
    hub: Hub | None = None
    # Notified (signed like OpenAI's webhooks) when the job succeeds, fails or is cancelled.
    webhook_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    # Higher runs first among the queued jobs of a queue. Any key may lower its own jobs (< 0);
    # only an admin key may raise one above the default (checked by the server).
    priority: int = Field(default=0, ge=-100, le=100)

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > METADATA_MAX_KEYS:
            raise ValueError(f"metadata may have at most {METADATA_MAX_KEYS} keys; it has {len(value)}")
        for key in value:
            if not key or len(key) > METADATA_MAX_KEY_CHARS:
                raise ValueError(f"metadata keys must be 1 to {METADATA_MAX_KEY_CHARS} characters; "
                                 f"{key[:METADATA_MAX_KEY_CHARS]!r}{'...' if len(key) > METADATA_MAX_KEY_CHARS else ''} "
                                 f"has {len(key)}")
        return value

    @field_validator("integrations")
    @classmethod
    def _one_of_each(cls, value: list[Integration] | None) -> list[Integration] | None:
        types = [item.type for item in value or []]
        if len(types) != len(set(types)):
            raise ValueError("give each integration type at most once")
        return value

    @model_validator(mode="after")
    def _files_differ(self) -> JobRequest:
        if self.validation_file is not None and self.validation_file == self.training_file:
            raise ValueError("validation_file must differ from training_file")
        return self

    @model_validator(mode="after")
    def _dpo_fits(self) -> JobRequest:
        if self.method_type == "dpo" and self.task == "sequence_classification":
            raise ValueError("method type 'dpo' trains a causal language model; task must be causal_lm (or unset)")
        if self.method_type == "dpo" and self.tuning.type not in DPO_TUNING:
            raise ValueError(f"method type 'dpo' trains with tuning.type {', '.join(DPO_TUNING)}, "
                             f"not {self.tuning.type!r}")
        if self.method_type == "dpo" and self.training.packing:
            raise ValueError("training.packing does not apply to method type 'dpo': each pair's replies are "
                             "compared whole")
        if self.method_type == "dpo" and self.training.n_gpus > 1:
            # Not tried under torch.distributed yet: refused rather than left to fail inside the launch.
            raise ValueError("training.n_gpus > 1 is not supported with method type 'dpo' yet; use one GPU")
        if self.method_type == "dpo" and self.training.goal is not None:
            raise ValueError("training.goal does not apply to method type 'dpo': its evaluation is the "
                             "preference accuracy against the base model")
        return self

    @property
    def method_type(self) -> str:
        return self.method.type if self.method else "supervised"

    def effective_hyperparameters(self) -> Hyperparameters:
        if self.method_type == "dpo":
            return (self.method.dpo.hyperparameters if self.method.dpo
                    else DpoHyperparameters(**(self.hyperparameters or Hyperparameters()).model_dump()))
        if self.method and self.method.supervised:
            return self.method.supervised.hyperparameters
        return self.hyperparameters or Hyperparameters()
