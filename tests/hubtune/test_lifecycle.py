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


# --- fair claiming, the paused checkpoint fence, and the sweeper (issue 6) ------------------------------

from hubtune.lifecycle import RUNNING_OR_PAUSED, claim_next  # noqa: E402
from hubtune.models import now  # noqa: E402


def _queued(sessions, owner: str, *, priority: int = 0, created: float = 0.0, queue: str = "train") -> str:
    job_id = new_id("ftjob")
    with sessions.begin() as s:
        s.add(Job(id=job_id, owner=owner, status="queued", queue=queue, priority=priority, model="org/m",
                  training_file="file-x", seed=1, spec={}, created_at=1000.0 + created, updated_at=now()))
    return job_id


@pytest.fixture
def fresh_queue(sessions):
    # Queued rows of earlier tests on the module's database would compete for the claims.
    with sessions.begin() as s:
        s.execute(Job.__table__.update().where(Job.status.in_(["queued", "running"])).values(status="cancelled"))


def test_claim_next_takes_priority_then_age_and_honours_the_owner_limit(sessions, fresh_queue):
    old = _queued(sessions, "alice", created=1)
    urgent = _queued(sessions, "alice", priority=5, created=3)
    urgent2 = _queued(sessions, "alice", priority=4, created=2)
    bob = _queued(sessions, "bob", created=4)
    _queued(sessions, "carol", queue="other", priority=99)
    order = []
    for _ in range(4):
        with sessions.begin() as s:
            got = claim_next(s, "train", owner="w", lease_seconds=30, max_running_per_owner=1)
        order.append(got and got[0])
    # alice runs one job at a time: her second-best waits while bob's older-than-nothing job goes.
    assert order == [urgent, bob, None, None]
    with sessions.begin() as s:
        s.execute(Job.__table__.update().where(Job.id == urgent).values(status="succeeded"))
    with sessions.begin() as s:
        assert claim_next(s, "train", owner="w", lease_seconds=30, max_running_per_owner=1)[0] == urgent2
    with sessions.begin() as s:  # no limit: the next best of alice's runs at once
        s.execute(Job.__table__.update().where(Job.id == urgent2).values(status="succeeded"))
        assert claim_next(s, "train", owner="w", lease_seconds=30)[0] == old


def test_a_paused_jobs_checkpoint_is_fenced_by_token(sessions):
    job_id = _job(sessions, Status.QUEUED)
    with sessions.begin() as s:
        token = claim(s, job_id, owner="w1", lease_seconds=30)
        assert transition(s, job_id, Status.PAUSED, expect=Status.RUNNING, message="paused")
    with sessions.begin() as s, pytest.raises(LeaseLost):  # ordinary writes stop at the pause
        fenced_event(s, job_id, token=token, message="step 9", type="metrics")
    with sessions.begin() as s:  # the stop-step checkpoint is still recorded
        fenced_event(s, job_id, token=token, message="Checkpoint saved at step 9", statuses=RUNNING_OR_PAUSED)
    with sessions.begin() as s, pytest.raises(LeaseLost):  # but never under another token
        fenced_event(s, job_id, token=token + 1, message="stale", statuses=RUNNING_OR_PAUSED)
    assert _events(sessions, job_id)[-1] == "Checkpoint saved at step 9"


@pytest.fixture
def sweep_env(db_url, tmp_path, monkeypatch):
    """The sweeper reads the process settings: this database, and a file-system broker whose folder
    shows the doorbells it rang."""
    from hubtune.queue import get_celery
    from hubtune.settings import get_settings

    monkeypatch.setenv("HUBTUNE_DATABASE_URL", db_url)
    monkeypatch.setenv("HUBTUNE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HUBTUNE_BROKER_URL", "")
    monkeypatch.setenv("HUBTUNE_REQUEUE_AFTER_SECONDS", "5")
    get_settings.cache_clear(), get_celery.cache_clear()
    yield get_settings()
    get_settings.cache_clear(), get_celery.cache_clear()


def _doorbells(settings) -> list[tuple[str, str]]:
    import base64
    import json

    bells = []
    for path in (settings.queue_dir / "messages").glob("*"):
        message = json.loads(path.read_text())
        body = json.loads(base64.b64decode(message["body"]))
        bells.append((message["headers"]["task"], body[0][0]))
    return bells


def _expire(sessions, job_id: str) -> None:
    with sessions.begin() as s:
        s.execute(Job.__table__.update().where(Job.id == job_id).values(lease_expires_at=now() - 1))


def test_sweeper_requeues_an_expired_lease_then_fails_it_at_max_attempts(sessions, sweep_env):
    from hubtune.sweeper import sweep

    job_id = _job(sessions, Status.QUEUED)
    with sessions.begin() as s:
        s.execute(Job.__table__.update().where(Job.id == job_id).values(max_attempts=2, queue="gpu-a"))
    with sessions.begin() as s:
        token = claim(s, job_id, owner="w1", lease_seconds=30)
    assert sweep(sweep_env).requeued == []  # a live lease is left alone
    _expire(sessions, job_id)
    # Two sweepers at once: one re-queues, the other finds nothing to do.
    reports = [sweep(sweep_env), sweep(sweep_env)]
    assert [r.requeued for r in reports] == [[job_id], []]
    assert _status(sessions, job_id) == "queued"
    assert _events(sessions, job_id)[-1] == "Worker w1 lost (its lease expired); re-queued, attempt 2 of 2"
    assert ("hubtune.train", job_id) in _doorbells(sweep_env)
    with sessions.begin() as s, pytest.raises(LeaseLost):  # the dead worker's token is fenced out
        heartbeat(s, job_id, token=token, lease_seconds=30)
    with sessions.begin() as s:
        assert claim(s, job_id, owner="w2", lease_seconds=30) is not None
    _expire(sessions, job_id)
    assert sweep(sweep_env).failed == [job_id]
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job.status == "failed" and job.attempts == 2
        assert job.error["code"] == "worker_lost" and job.error["param"] is None
        assert "attempt 2 of 2" in job.error["message"]


def test_sweeper_rerings_stale_queued_validating_and_unclaimed_publishing(sessions, sweep_env):
    from hubtune.sweeper import sweep

    queued, validating = _job(sessions, Status.QUEUED), _job(sessions, Status.VALIDATING_FILES)
    publishing, fresh = _job(sessions, Status.QUEUED), _job(sessions, Status.QUEUED)
    with sessions.begin() as s:
        token = claim(s, publishing, owner="w1", lease_seconds=30)
        hand_over(s, publishing, token=token, stage=Stage.PUBLISHING, message="to publish")
    with sessions.begin() as s:
        s.execute(Job.__table__.update().where(Job.id.in_([queued, validating, publishing]))
                  .values(updated_at=now() - 60))
    rung = set(sweep(sweep_env).rung)
    assert {("hubtune.train", queued), ("hubtune.prepare", validating), ("hubtune.publish", publishing)} <= rung
    assert not any(job_id == fresh for _, job_id in rung)
    # Rung once per requeue_after_seconds, not on every pass.
    assert not {queued, validating, publishing} & {j for _, j in sweep(sweep_env).rung}
    assert {("hubtune.train", queued), ("hubtune.prepare", validating)} <= set(_doorbells(sweep_env))


def test_sweeper_frees_the_lease_of_a_dead_publisher(sessions, sweep_env):
    from hubtune.sweeper import sweep

    job_id = _job(sessions, Status.QUEUED)
    with sessions.begin() as s:
        token = claim(s, job_id, owner="w1", lease_seconds=30)
        hand_over(s, job_id, token=token, stage=Stage.PUBLISHING, message="to publish")
    with sessions.begin() as s:
        assert claim_stage(s, job_id, stage=Stage.PUBLISHING, owner="p1", lease_seconds=30) is not None
    _expire(sessions, job_id)
    assert ("hubtune.publish", job_id) in sweep(sweep_env).rung
    with sessions.begin() as s:  # the next publish task can take the stage; attempts are training's only
        assert claim_stage(s, job_id, stage=Stage.PUBLISHING, owner="p2", lease_seconds=30) is not None
    assert _status(sessions, job_id) == "running"
