"""The job lifecycle. Every status change goes through `transition()`: one guarded UPDATE that only
matches the expected current status (and lease token), plus an event row, in the caller's transaction.
"""

from __future__ import annotations

import enum
import secrets
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, aliased

from hubtune.models import Job, JobEvent, now


class Status(str, enum.Enum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Stage(str, enum.Enum):
    PREPARING = "preparing"
    TRAINING = "training"
    EVALUATING = "evaluating"
    PUBLISHING = "publishing"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

# Keys of an event's data that readers (publish's model card: worker and training time) look up
# instead of parsing the event's text, which stays free to change.
CLAIMED_BY = "worker"  # a claim's event: the worker that took the job
HANDED_TO = "handed_to"  # a hand-over's event: the stage the job moves on to

ALLOWED: dict[Status, frozenset[Status]] = {
    Status.VALIDATING_FILES: frozenset({Status.QUEUED, Status.FAILED, Status.CANCELLED}),
    Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED, Status.CANCELLED, Status.PAUSED}),
    Status.RUNNING: frozenset(
        {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.PAUSED, Status.QUEUED}
    ),
    Status.PAUSED: frozenset({Status.QUEUED, Status.CANCELLED}),
    Status.SUCCEEDED: frozenset(),
    # failed -> running: POST .../publish pushes a kept artifact again (stage publishing), no retraining.
    Status.FAILED: frozenset({Status.RUNNING}),
    Status.CANCELLED: frozenset(),
}


# An event's level: OpenAI's three spellings (its clients and the dashboard's styles know these; an
# older hubtune also wrote "warning", which the API answers as WARN: server/schemas.py).
INFO, WARN, ERROR = "info", "warn", "error"
LEVELS = (INFO, WARN, ERROR)


class IllegalTransition(ValueError):
    pass


class LeaseLost(RuntimeError):
    """The job is no longer running under this lease: cancelled, paused, or claimed by another worker."""


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    session.add(JobEvent(job_id=job_id, message=message, level=level, type=type, data=data, created_at=now()))


def transition(
    session: Session,
    job_id: str,
    to: Status,
    *,
    expect: Status | frozenset[Status] | set[Status],
    expect_token: int | None = None,
    message: str,
    level: str = "info",
    data: dict[str, Any] | None = None,
    where: tuple = (),
    **fields: Any,
) -> bool:
    """Move job `job_id` from one of `expect` (and lease `expect_token`) to `to`.

    Returns False, writing nothing, when the row has moved on. `fields` are set on the row too;
    `where` adds conditions to the guard (an expired lease, an owner under its running limit).
    """
    expected = {expect} if isinstance(expect, Status) else set(expect)
    for src in expected:
        if to not in ALLOWED[src]:
            raise IllegalTransition(f"{src.value} -> {to.value} is not a job transition")
    values: dict[str, Any] = {"status": to.value, "updated_at": now(), **fields}
    if to in TERMINAL:
        values.setdefault("finished_at", now())
        values.setdefault("lease_owner", None)
        values.setdefault("lease_expires_at", None)
        values.setdefault("stage", None)  # a finished job is at no stage (a cancel used to leave "training")
    stmt = update(Job).where(Job.id == job_id, Job.status.in_([s.value for s in expected]))
    if expect_token is not None:
        stmt = stmt.where(Job.lease_token == expect_token)
    if where:
        stmt = stmt.where(*where)
    result = session.execute(stmt.values(**values).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return False
    add_event(session, job_id, message, level=level, data=data)
    if to in TERMINAL:
        from hubtune.notifications import after_terminal  # completion notifications (job.webhook_url)

        after_terminal(session, job_id)
    return True


def claim(session: Session, job_id: str, *, owner: str, lease_seconds: float,
          max_running_per_owner: int = 0) -> int | None:
    """Take the lease on a queued job: queued -> running with a new fencing token, or None.

    With `max_running_per_owner`, the claim only happens while the job's owner runs fewer jobs.
    """
    job = session.execute(select(Job.lease_token, Job.attempts, Job.owner).where(Job.id == job_id)).one_or_none()
    if job is None:
        return None
    where: tuple = ()
    if max_running_per_owner:
        where = (_running_count(job.owner) < max_running_per_owner,)
    # A random increment keeps tokens unguessable while still growing with every claim.
    token = job.lease_token + 1 + secrets.randbelow(1000)
    ok = transition(
        session,
        job_id,
        Status.RUNNING,
        expect=Status.QUEUED,
        message=f"Fine-tuning job started on {owner}",
        data={CLAIMED_BY: owner},
        where=where,
        lease_owner=owner,
        lease_token=token,
        lease_expires_at=now() + lease_seconds,
        heartbeat_at=now(),
        started_at=now(),
        attempts=job.attempts + 1,
        stage=Stage.PREPARING.value,
    )
    return token if ok else None


def claim_next(session: Session, queue: str, *, owner: str, lease_seconds: float,
               max_running_per_owner: int = 0, candidates: int = 20) -> tuple[str, int] | None:
    """Claim the best queued job of `queue`: highest priority, then oldest, skipping owners already at
    `max_running_per_owner` running jobs. Returns (job id, token), or None when nothing can run.
    Gives up after `candidates` jobs that another worker took first.

    A doorbell is only a hint that a queue has work: which job runs is decided here, from the rows.
    """
    stmt = select(Job.id).where(Job.status == Status.QUEUED.value, Job.queue == queue)
    if max_running_per_owner:
        _lock_claims(session)
        busy = (select(Job.owner).where(Job.status == Status.RUNNING.value).group_by(Job.owner)
                .having(func.count() >= max_running_per_owner))
        stmt = stmt.where(Job.owner.not_in(busy))
    # One row at a time, locked until commit, passing over the rows other workers are claiming right now
    # (PostgreSQL; SQLite has no row locks and ignores it). Reading 20 candidates unlocked made concurrent
    # workers try the same rows, each UPDATE waiting for the previous taker's commit only to miss, until
    # they ran out: with no per-owner limit, 50 workers got None from 1,061 of 3,061 calls while jobs were
    # queued, claims p99 3.1 s (bench/claim_sim.py). Locking all 20 would hide the 19 this claim leaves.
    stmt = stmt.order_by(Job.priority.desc(), Job.created_at, Job.id).limit(1).with_for_update(skip_locked=True)
    tried: list[str] = []
    for _ in range(candidates):
        job_id = session.execute(stmt.where(Job.id.not_in(tried))).scalar()
        if job_id is None:
            return None
        # Without row locks (SQLite) another worker may take it first (the guarded UPDATE misses).
        token = claim(session, job_id, owner=owner, lease_seconds=lease_seconds,
                      max_running_per_owner=max_running_per_owner)
        if token is not None:
            return job_id, token
        tried.append(job_id)
    return None


def _running_count(owner: str):
    other = aliased(Job)
    return (select(func.count()).select_from(other)
            .where(other.owner == owner, other.status == Status.RUNNING.value).scalar_subquery())


def _lock_claims(session: Session) -> None:
    """PostgreSQL: serialise claims until commit, so two workers cannot both take an owner's last
    running slot (under READ COMMITTED each would miss the other's uncommitted claim). One lock for all
    queues (an owner's jobs may wait on several), taken first, so it cannot deadlock; a claim holds it
    for milliseconds, and only when a per-owner limit is set. SQLite already serialises writers."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext('hubtune-claim'))"))


RUNNING_ONLY = frozenset({Status.RUNNING})
# A paused job's worker still writes the checkpoint it saves at the stop step, under its own token.
RUNNING_OR_PAUSED = frozenset({Status.RUNNING, Status.PAUSED})


def _fence(session: Session, job_id: str, token: int, *, statuses: frozenset[Status] = RUNNING_ONLY,
           **fields: Any) -> None:
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_([s.value for s in statuses]), Job.lease_token == token)
        .values(updated_at=now(), **fields)
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount != 1:
        raise LeaseLost(job_id)


def heartbeat(session: Session, job_id: str, *, token: int, lease_seconds: float, **fields: Any) -> None:
    """Extend the lease; raises LeaseLost when the job was cancelled, paused or taken over."""
    t = now()
    _fence(session, job_id, token, heartbeat_at=t, lease_expires_at=t + lease_seconds, **fields)


def fenced_update(session: Session, job_id: str, *, token: int, **fields: Any) -> None:
    """Write job fields only while this lease still holds."""
    _fence(session, job_id, token, **fields)


def fenced_event(
    session: Session, job_id: str, *, token: int, message: str, type: str = "message",
    level: str = "info", data: dict[str, Any] | None = None, statuses: frozenset[Status] = RUNNING_ONLY,
    **fields: Any,
) -> None:
    """Write an event (and job fields) only while this lease still holds (in one of `statuses`)."""
    _fence(session, job_id, token, statuses=statuses, **fields)
    add_event(session, job_id, message, level=level, type=type, data=data)


def hand_over(session: Session, job_id: str, *, token: int, stage: Stage, message: str,
              data: dict[str, Any] | None = None, **fields: Any) -> None:
    """End this lease and leave the running job at `stage` for the next task to claim.

    The token moves on, so a late heartbeat from the old holder fails instead of re-taking the lease.
    """
    _fence(session, job_id, token, stage=stage.value, lease_owner=None, lease_expires_at=None,
           lease_token=token + 1, **fields)
    add_event(session, job_id, message, data={**(data or {}), HANDED_TO: stage.value})


def claim_stage(session: Session, job_id: str, *, stage: Stage, owner: str, lease_seconds: float) -> int | None:
    """Take the free lease of a running job waiting at `stage` (e.g. publishing); None if taken or moved on."""
    row = session.execute(select(Job.lease_token).where(Job.id == job_id)).one_or_none()
    if row is None:
        return None
    token = row.lease_token + 1 + secrets.randbelow(1000)
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == Status.RUNNING.value, Job.stage == stage.value,
               Job.lease_owner.is_(None), Job.lease_token == row.lease_token)
        .values(lease_owner=owner, lease_token=token, lease_expires_at=now() + lease_seconds,
                heartbeat_at=now(), updated_at=now())
        .execution_options(synchronize_session=False)
    )
    return token if session.execute(stmt).rowcount == 1 else None


def put_back(session: Session, job_id: str, *, token: int, message: str, refund: bool = True) -> bool:
    """Give a claimed job back to the queue when what stopped it was not the job: running -> queued
    under our token. `refund`: the attempt is returned (artifact storage unreachable); else it counts
    (the worker's disk filled: a job that fills every disk still ends). No doorbell: the sweeper rings
    again after requeue_after_seconds, which paces the retries through an outage."""
    attempts = session.execute(select(Job.attempts).where(Job.id == job_id)).scalar_one()
    return transition(session, job_id, Status.QUEUED, expect=Status.RUNNING, expect_token=token, message=message,
                      level=WARN, lease_owner=None, lease_expires_at=None, lease_token=token + 1,
                      attempts=max(attempts - 1, 0) if refund else attempts, stage=None)


def release_stage(session: Session, job_id: str, *, token: int, message: str) -> None:
    """Free a stage's lease (publishing) without moving on: the sweeper rings the stage again after
    requeue_after_seconds. For an outage that is not the job's (artifact storage unreachable)."""
    _fence(session, job_id, token, lease_owner=None, lease_expires_at=None, lease_token=token + 1)
    add_event(session, job_id, message, level=WARN)


def release_stopped(session: Session, job_id: str, *, token: int) -> None:
    """A paused job's worker has stopped and its stop checkpoint is on disk: free the lease, so that a
    resume may hand the job to another worker without two of them writing checkpoints at once."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == Status.PAUSED.value, Job.lease_token == token)
        .values(lease_owner=None, lease_expires_at=None, updated_at=now())
        .execution_options(synchronize_session=False)
    )


def still_stopping(job: Job, *, at: float | None = None) -> bool:
    """A paused job whose worker may still be saving its stop checkpoint (its lease is held and live)."""
    return job.lease_owner is not None and (job.lease_expires_at or 0) > (at or now())
