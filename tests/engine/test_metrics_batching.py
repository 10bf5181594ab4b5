"""JobHooks keeps the database off the steps: metrics events batched (every step still written, in order,
on time), and the job row read for cancel/pause on an interval, not after every step."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from hubtune.db import session_scope
from hubtune.lifecycle import Status, transition
from hubtune.models import Job, JobEvent
from worker import hooks as hooks_module
from testkit.leases import claimed_lease
from worker.hooks import JobHooks


@pytest.fixture
def running_job(tmp_path, monkeypatch):
    with claimed_lease(tmp_path, monkeypatch, "ftjob-batch") as lease:
        yield lease


def _metric_events() -> list[JobEvent]:
    with session_scope() as s:
        return list(s.execute(select(JobEvent).where(JobEvent.type == "metrics").order_by(JobEvent.id)).scalars())


def _commits(monkeypatch) -> list[int]:
    """Counts the transactions the hooks open."""
    calls = []
    real = hooks_module.session_scope

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(hooks_module, "session_scope", counting)
    return calls


def test_steps_are_batched_and_none_is_lost(running_job, monkeypatch):
    monkeypatch.setattr(hooks_module, "METRICS_FLUSH_SECONDS", 3600.0)
    hooks = JobHooks(running_job)
    hooks.on_start(total_steps=10, trainable_params=1, total_params=2)
    commits = _commits(monkeypatch)
    hooks._metrics_flushed = 10**12  # as if the last write were just now: only the rules below write
    for step in range(1, 5):
        hooks.on_metrics({"step": step, "train_loss": 1.0 / step, "trained_tokens": 100 * step})
    assert commits == [] and _metric_events() == []
    hooks.on_metrics({"step": 4, "valid_loss": 0.5, "trained_tokens": 400})  # an evaluation writes at once
    assert len(commits) == 1
    events = _metric_events()
    assert [e.data.get("step") for e in events] == [1, 2, 3, 4, 4]
    assert [e.created_at for e in events] == sorted(e.created_at for e in events)
    with session_scope() as s:
        assert s.get(Job, "ftjob-batch").trained_tokens == 400  # the job row carries the latest fields
    for step in range(5, 8):
        hooks.on_metrics({"step": step, "train_loss": 0.1, "trained_tokens": 100 * step})
    hooks.flush_metrics()  # what the engine calls when training ends (stopped early here, at step 7)
    hooks.flush_metrics()  # nothing left: no empty transaction
    assert len(commits) == 2
    assert [e.data["step"] for e in _metric_events()] == [1, 2, 3, 4, 4, 5, 6, 7]
    hooks.on_metrics({"step": 10, "train_loss": 0.05, "trained_tokens": 1000})  # the last step writes at once
    assert len(commits) == 3 and _metric_events()[-1].data["step"] == 10


def test_a_due_interval_writes_and_a_lost_lease_writes_nothing(running_job, monkeypatch):
    hooks = JobHooks(running_job)
    hooks.on_start(total_steps=100, trainable_params=1, total_params=2)
    monkeypatch.setattr(hooks_module, "METRICS_FLUSH_SECONDS", 0.0)
    hooks.on_metrics({"step": 1, "train_loss": 1.0, "trained_tokens": 10})
    assert [e.data["step"] for e in _metric_events()] == [1]
    monkeypatch.setattr(hooks_module, "METRICS_FLUSH_SECONDS", 3600.0)
    hooks.on_metrics({"step": 2, "train_loss": 1.0, "trained_tokens": 20})
    with session_scope() as s:
        transition(s, "ftjob-batch", Status.CANCELLED, expect=Status.RUNNING, message="cancelled")
    hooks.flush_metrics()
    assert running_job.lost.is_set()
    with session_scope() as s:
        assert s.execute(select(func.count()).select_from(JobEvent).where(JobEvent.type == "metrics")).scalar() == 1


def test_steps_buffered_when_a_pause_lands_are_kept(running_job, monkeypatch):
    # The pause lands while steps 1-3 wait in the buffer; training stops at the next step and the engine
    # flushes. Those steps must be written: resume continues after them, so nothing would log them again.
    monkeypatch.setattr(hooks_module, "METRICS_FLUSH_SECONDS", 3600.0)
    hooks = JobHooks(running_job)
    hooks.on_start(total_steps=10, trainable_params=1, total_params=2)
    hooks._metrics_flushed = 10**12
    for step in range(1, 4):
        hooks.on_metrics({"step": step, "train_loss": 1.0 / step, "trained_tokens": 10 * step})
    with session_scope() as s:
        transition(s, "ftjob-batch", Status.PAUSED, expect=Status.RUNNING, message="paused")
    assert hooks.should_stop() is True
    hooks.flush_metrics()
    assert [e.data["step"] for e in _metric_events()] == [1, 2, 3]
    with session_scope() as s:
        assert s.get(Job, "ftjob-batch").trained_tokens == 30


def test_stop_poll_reads_the_row_on_its_interval(running_job, monkeypatch):
    monkeypatch.setattr(hooks_module, "STOP_POLL_SECONDS", 3600.0)
    hooks = JobHooks(running_job)
    reads = []
    real = running_job.still_ours
    monkeypatch.setattr(running_job, "still_ours", lambda: reads.append(1) or real())
    assert hooks.should_stop() is False and len(reads) == 1  # the first step reads the row
    with session_scope() as s:
        transition(s, "ftjob-batch", Status.CANCELLED, expect=Status.RUNNING, message="cancelled")
    assert [hooks.should_stop() for _ in range(50)] == [False] * 50
    assert len(reads) == 1  # 50 steps inside the interval: no query
    monkeypatch.setattr(hooks_module, "STOP_POLL_SECONDS", 0.0)
    assert hooks.should_stop() is True and len(reads) == 2  # the interval is over: the cancel is seen


def test_a_lease_the_heartbeat_lost_stops_at_the_next_step(running_job, monkeypatch):
    monkeypatch.setattr(hooks_module, "STOP_POLL_SECONDS", 3600.0)
    hooks = JobHooks(running_job)
    assert hooks.should_stop() is False
    running_job.lost.set()  # what the heartbeat thread does when the row is no longer ours
    assert hooks.should_stop() is True
