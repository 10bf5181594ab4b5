"""The job request: OpenAI's fine-tuning fields plus hubtune's own (task, tuning, training, hub).

Unknown fields are refused (extra="forbid") so that a typo never silently trains something else.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Auto = Literal["auto"]
TASKS = ("sequence_classification", "causal_lm")
TUNING_TYPES = ("lora",)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(StrictModel):
    n_epochs: Auto | Annotated[int, Field(ge=1, le=100)] = "auto"
    batch_size: Auto | Annotated[int, Field(ge=1, le=4096)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"


class Supervised(StrictModel):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(StrictModel):
    type: Literal["supervised"] = "supervised"
    supervised: Supervised | None = None


class Tuning(StrictModel):
    type: Literal["lora"] = "lora"
    r: int = Field(default=8, ge=1, le=512)
    alpha: float = Field(default=16.0, gt=0, le=4096)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: Auto | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = "auto"


class Training(StrictModel):
    learning_rate: float | None = Field(default=None, gt=0, le=1)
    max_seq_length: int = Field(default=256, ge=8, le=32768)
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    warmup_ratio: float = Field(default=0.0, ge=0, le=0.5)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    logging_steps: int = Field(default=1, ge=1)
    # Checkpoint interval in optimizer steps; None saves one checkpoint per epoch.
    save_steps: int | None = Field(default=None, ge=1)


class Hub(StrictModel):
    repo_id: str | None = Field(default=None, min_length=1, max_length=96)
    private: bool = True
    branch: str = Field(default="main", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._/-]+$")


class JobRequest(StrictModel):
    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    suffix: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9._-]*$")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    method: Method | None = None
    # OpenAI's older top-level hyperparameters; method.supervised.hyperparameters wins when both are set.
    hyperparameters: Hyperparameters | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    # None: decided from the training file's columns (label -> classification, messages/prompt -> causal LM).
    task: Literal["sequence_classification", "causal_lm"] | None = None
    tuning: Tuning = Field(default_factory=Tuning)
    training: Training = Field(default_factory=Training)
    hub: Hub | None = None

    @model_validator(mode="after")
    def _files_differ(self) -> JobRequest:
        if self.validation_file is not None and self.validation_file == self.training_file:
            raise ValueError("validation_file must differ from training_file")
        return self

    def effective_hyperparameters(self) -> Hyperparameters:
        if self.method and self.method.supervised:
            return self.method.supervised.hyperparameters
        return self.hyperparameters or Hyperparameters()
