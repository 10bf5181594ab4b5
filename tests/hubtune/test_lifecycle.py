from __future__ import annotations

import pytest
from sqlalchemy import func, select

from hubtune.ids import new_id
from hubtune.lifecycle import (
    IllegalTransition, LeaseLost, Stage, Status, claim, claim_stage, fenced_event, hand_over, heartbeat,
    transition,
)
from hubtune.models import Job, JobEvent


def _job(sessions, status: Status = Status.VALIDATING_FILES) -> str:
    job_id = new_id("ftjob")
    with sessions.begin() as s:
        s.add(Job(id=job_id, owner="alice", status=status.value, model="org/m", training_file="file-x", seed=1,
                  spec={}))
    return job_id


def _events(sessions, job_id: str) -> list[str]:
    with sessions() as s:
        return list(s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def _status(sessions, job_id: str) -> str:
    with sessions() as s:
        return s.get(Job, job_id).status


def test_transition_is_guarded_and_writes_one_event(sessions):
    job_id = _job(sessions)
    with sessions.begin() as s:
        assert transition(s, job_id, Status.QUEUED, expect=Status.VALIDATING_FILES, message="queued")
    with sessions.begin() as s:
        # A second worker acting on a stale view changes nothing and writes no event.
        assert not transition(s, job_id, Status.QUEUED, expect=Status.VALIDATING_FILES, message="again")
    assert _status(sessions, job_id) == "queued"
    assert _events(sessions, job_id) == ["queued"]


def test_event_and_status_roll_back_together(sessions):
    job_id = _job(sessions)
    with pytest.raises(RuntimeError):
        with sessions.begin() as s:
            transition(s, job_id, Status.QUEUED, expect=Status.VALIDATING_FILES, message="queued")
            raise RuntimeError("crash before commit")
    assert _status(sessions, job_id) == "validating_files"
    assert _events(sessions, job_id) == []


def test_illegal_transition_is_refused(sessions):
    job_id = _job(sessions, Status.SUCCEEDED)
    with sessions.begin() as s, pytest.raises(IllegalTransition):
        transition(s, job_id, Status.RUNNING, expect=Status.SUCCEEDED, message="no")


def test_terminal_transition_sets_finished_and_frees_lease(sessions):
    job_id = _job(sessions, Status.QUEUED)
    with sessions.begin() as s:
        token = claim(s, job_id, owner="w1", lease_seconds=30)
    with sessions.begin() as s:
        assert transition(s, job_id, Status.FAILED, expect=Status.RUNNING, expect_token=token, message="x")
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job.finished_at is not None and job.lease_owner is None


def test_only_one_claim_wins_and_tokens_fence_writes(sessions):
    job_id = _job(sessions, Status.QUEUED)
    with sessions.begin() as s:
        token = claim(s, job_id, owner="w1", lease_seconds=30)
    with sessions.begin() as s:
        assert claim(s, job_id, owner="w2", lease_seconds=30) is None
    with sessions.begin() as s:
        heartbeat(s, job_id, token=token, lease_seconds=30)
        fenced_event(s, job_id, token=token, message="step 1", type="metrics", data={"step": 1})
    with sessions.begin() as s, pytest.raises(LeaseLost):
        heartbeat(s, job_id, token=token + 1, lease_seconds=30)
    with sessions() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.lease_owner, job.lease_token, job.attempts) == ("running", "w1", token, 1)


def test_cancel_fences_out_the_running_worker(sessions):
    job_id = _job(sessions, Status.QUEUED)
    with sessions.begin() as s:
        token = claim(s, job_id, owner="w1", lease_seconds=30)
    with sessions.begin() as s:
        assert transition(s, job_id, Status.CANCELLED, expect={Status.QUEUED, Status.RUNNING}, message="cancelled")
    with pytest.raises(LeaseLost):
        with sessions.begin() as s:
            fenced_event(s, job_id, token=token, message="late metrics", type="metrics")
    assert "late metrics" not in _events(sessions, job_id)
    assert _status(sessions, job_id) == "cancelled"


def test_hand_over_lets_exactly_one_publisher_claim(sessions):
    job_id = _job(sessions, Status.QUEUED)
    with sessions.begin() as s:
        token = claim(s, job_id, owner="trainer", lease_seconds=30)
    with sessions.begin() as s:
        hand_over(s, job_id, token=token, stage=Stage.PUBLISHING, message="trained")
    with sessions.begin() as s, pytest.raises(LeaseLost):
        heartbeat(s, job_id, token=token, lease_seconds=30)  # the trainer's late heartbeat
    with sessions.begin() as s:
        first = claim_stage(s, job_id, stage=Stage.PUBLISHING, owner="p1", lease_seconds=30)
    with sessions.begin() as s:
        second = claim_stage(s, job_id, stage=Stage.PUBLISHING, owner="p2", lease_seconds=30)
    assert first is not None and second is None
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id)) == 2
