"""Step events read like OpenAI's, an evaluated step is one event, and a long run's step events are
thinned while every step stays in the metrics series."""

from __future__ import annotations

from sqlalchemy import select

from hubtune.db import session_scope
from hubtune.models import JobEvent
from hubtune.spec import Training, Tuning
from hubtune.step_events import MAX_STEP_EVENTS, step_message
from tests.engine.conftest import RecordingHooks
from tests.engine.test_metrics_batching import running_job  # noqa: F401  (the fixture)
from testkit.tiny_models import write_classification_jsonl
from worker import hooks as hooks_module
from worker.engine.trainer import train
from worker.hooks import JobHooks


def _rows() -> list[JobEvent]:
    with session_scope() as s:
        return list(s.execute(select(JobEvent).where(JobEvent.type.in_(("metrics", "series")))
                              .order_by(JobEvent.id)).scalars())


def test_the_message_reads_like_openais():
    assert step_message({"step": 5, "train_loss": 0.123}, total_steps=42) == "Step 5/42: training loss=0.123"
    assert (step_message({"step": 10, "train_loss": 0.5, "valid_loss": 0.61234, "valid_accuracy": 0.75},
                         total_steps=42)
            == "Step 10/42: training loss=0.5, validation loss=0.6123, validation accuracy=0.75")


def test_a_long_run_shows_about_200_steps_and_keeps_every_point(running_job, monkeypatch):  # noqa: F811
    monkeypatch.setattr(hooks_module, "METRICS_FLUSH_SECONDS", 3600.0)
    total, evals = 5000, {1234, 2500, 5000}
    hooks = JobHooks(running_job)
    hooks.on_start(total_steps=total, trainable_params=1, total_params=2)
    for step in range(1, total + 1):
        metrics = {"step": step, "total_steps": total, "train_loss": 1.0 / step, "trained_tokens": step}
        if step in evals:
            metrics["valid_loss"] = 2.0 / step
        hooks.on_metrics(metrics)
    hooks.flush_metrics()
    rows = _rows()
    assert [r.data["step"] for r in rows] == list(range(1, total + 1))  # the series is complete
    shown = [r for r in rows if r.type == "metrics"]
    assert len(shown) <= MAX_STEP_EVENTS + len(evals)
    assert len(shown) >= MAX_STEP_EVENTS - 10
    steps = [r.data["step"] for r in shown]
    assert steps[0] == 1 and steps[-1] == total and evals <= set(steps)
    assert shown[0].message == "Step 1/5000: training loss=1"
    assert next(r.message for r in shown if r.data["step"] == 2500) == (
        "Step 2500/5000: training loss=0.0004, validation loss=0.0008")


def test_a_short_run_shows_every_step_and_the_stop_step(running_job, monkeypatch):  # noqa: F811
    monkeypatch.setattr(hooks_module, "METRICS_FLUSH_SECONDS", 3600.0)
    hooks = JobHooks(running_job)
    hooks.on_start(total_steps=100, trainable_params=1, total_params=2)
    for step in range(1, 6):
        hooks.on_metrics({"step": step, "train_loss": 1.0})
    hooks.flush_metrics()
    assert [r.type for r in _rows()] == ["metrics"] * 5

    hooks = JobHooks(running_job)
    hooks.on_start(total_steps=10_000, trainable_params=1, total_params=2)  # a step event every 51 steps
    hooks.on_metrics({"step": 1, "train_loss": 1.0})
    hooks.on_metrics({"step": 2, "train_loss": 1.0})
    hooks._thinner.stopping = True  # what should_stop() sets when a cancel or pause is seen
    hooks.on_metrics({"step": 3, "train_loss": 1.0})
    hooks.flush_metrics()
    assert [(r.data["step"], r.type) for r in _rows()[5:]] == [(1, "metrics"), (2, "series"), (3, "metrics")]


def test_an_evaluated_step_reaches_the_hooks_once_with_both_losses(tmp_path, tiny_bert, make_plan):
    train_file = write_classification_jsonl(tmp_path / "train.jsonl", 32, seed=1)  # 4 steps an epoch
    valid_file = write_classification_jsonl(tmp_path / "valid.jsonl", 8, seed=2)
    hp = {"n_epochs": 2, "batch_size": 8, "learning_rate": 1e-2, "learning_rate_multiplier": 1.0}
    runs = {"eval_steps": Training(learning_rate=1e-2, logging_steps=1, eval_steps=3, save_steps=3),
            "epochs": Training(learning_rate=1e-2, logging_steps=1)}
    for name, training in runs.items():
        plan = make_plan(tmp_path / name, model_dir=tiny_bert, train_file=train_file, valid_file=valid_file,
                         seed=2, tuning=Tuning(dropout=0.0), training=training, hyperparameters=hp)
        hooks = RecordingHooks()
        train(plan, hooks)
        steps = [m["step"] for m in hooks.metrics]
        assert steps == list(range(1, 9)), (name, steps)  # one call a step, evaluated or not
        evaluated = [m["step"] for m in hooks.metrics if "valid_loss" in m]
        assert evaluated == ([3, 6, 8] if name == "eval_steps" else [4, 8]), name
        assert all("train_loss" in m for m in hooks.metrics)
