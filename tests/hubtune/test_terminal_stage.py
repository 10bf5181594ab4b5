"""A job that reaches a terminal status keeps no stage: a cancelled job was shown "training" forever."""

from __future__ import annotations

import pytest

from hubtune import settings as settings_module
from hubtune.db import engine_for, session_scope
from hubtune.lifecycle import Stage, Status, claim, transition
from hubtune.migrate import upgrade
from hubtune.models import Job


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'stage.db'}"
    upgrade(url)
    monkeypatch.setenv("HUBTUNE_DATABASE_URL", url)
    settings_module.get_settings.cache_clear()
    yield
    engine_for(url).dispose()
    settings_module.get_settings.cache_clear()


def _running(job_id: str) -> int:
    with session_scope() as s:
        s.add(Job(id=job_id, owner="o", status=Status.QUEUED.value, model="m", training_file="f", seed=1,
                  queue="train", spec={}, attempts=0, max_attempts=3, lease_token=0))
    with session_scope() as s:
        token = claim(s, job_id, owner="w", lease_seconds=60)
        s.get(Job, job_id).stage = Stage.TRAINING.value
    return token


@pytest.mark.parametrize("to", [Status.CANCELLED, Status.FAILED, Status.SUCCEEDED])
def test_a_terminal_transition_clears_the_stage(db, to):
    _running("ftjob-stage")
    with session_scope() as s:
        assert transition(s, "ftjob-stage", to, expect=Status.RUNNING, message=to.value)
    with session_scope() as s:
        job = s.get(Job, "ftjob-stage")
        assert job.status == to.value and job.stage is None and job.finished_at is not None


def test_a_non_terminal_transition_keeps_it_and_an_explicit_stage_wins(db):
    _running("ftjob-paused")
    with session_scope() as s:
        assert transition(s, "ftjob-paused", Status.PAUSED, expect=Status.RUNNING, message="paused")
        assert s.get(Job, "ftjob-paused").stage == Stage.TRAINING.value
    _running("ftjob-explicit")
    with session_scope() as s:
        assert transition(s, "ftjob-explicit", Status.FAILED, expect=Status.RUNNING, message="failed",
                          stage=Stage.PUBLISHING.value)
        assert s.get(Job, "ftjob-explicit").stage == Stage.PUBLISHING.value
