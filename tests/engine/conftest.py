from __future__ import annotations

from pathlib import Path

import pytest

from testkit.tiny_models import make_tiny_bert, make_tiny_llama, minilm_dir
from worker.engine.plan import TrainPlan


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def minilm() -> Path:
    return minilm_dir()


@pytest.fixture(scope="session")
def llama_tokenizer(tiny_llama):
    from worker.engine.trainer import load_tokenizer

    return load_tokenizer(tiny_llama)


@pytest.fixture(scope="session")
def bert_tokenizer(tiny_bert):
    from worker.engine.trainer import load_tokenizer

    return load_tokenizer(tiny_bert)


@pytest.fixture
def make_plan(tmp_path):
    """Builds a TrainPlan through ``TrainPlan.in_folder`` (the benches' factory too): the artifact and
    checkpoints under ``root`` (this test's tmp_path by default), a sequence_classification task unless
    told, and plain hyperparameters (``n_epochs``, ``batch_size``, the training rate) unless given."""

    def make(root: Path | None = None, *, task: str = "sequence_classification", **fields) -> TrainPlan:
        return TrainPlan.in_folder(root if root is not None else tmp_path, task=task, **fields)

    return make


class RecordingHooks:
    """Hooks that record every call; ``stop_at`` makes should_stop() true from that step on."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.started: dict | None = None
        self.metrics: list[dict] = []
        self.checkpoints: list[dict] = []
        self.reports: list[dict] = []  # on_evaluation calls: {stage, message, data}
        self.calls: list[str] = []  # hook names in call order
        self.polls = 0

    def on_evaluation(self, *, stage: str, message: str, data: dict) -> None:
        self.calls.append("on_evaluation")
        self.reports.append({"stage": stage, "message": message, "data": data})

    def on_start(self, *, total_steps: int, trainable_params: int, total_params: int) -> None:
        self.calls.append("on_start")
        self.started = {"total_steps": total_steps, "trainable_params": trainable_params, "total_params": total_params}

    def on_metrics(self, metrics: dict) -> None:
        self.metrics.append(dict(metrics))

    def on_checkpoint(self, *, step: int, path: Path, metrics: dict) -> None:
        self.checkpoints.append({"step": step, "path": Path(path), "metrics": dict(metrics)})

    def should_stop(self) -> bool:
        self.polls += 1
        return self.stop_at is not None and self.polls >= self.stop_at

    @property
    def train_losses(self) -> list[float]:
        return [m["train_loss"] for m in self.metrics if "train_loss" in m]

    @property
    def evaluations(self) -> list[dict]:
        return [m for m in self.metrics if "valid_loss" in m]
