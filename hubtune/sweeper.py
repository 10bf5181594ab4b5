"""The sweeper: the periodic task that keeps the promise "a job is never lost".

A Celery message is only a doorbell; the row is the truth. The sweeper reads the rows and repairs what
a crash or a lost message left behind:
- a running job whose lease expired (its worker died or froze) goes back to queued with a new token
  (the stale worker's fenced writes now fail) and a train doorbell, or fails with `worker_lost` once
  it used `max_attempts` attempts;
- a publishing job whose publish lease expired, or that nobody claimed, gets its publish doorbell again;
- a queued or validating_files job with no progress for `requeue_after_seconds` gets its train or
  prepare doorbell again (a duplicate is harmless: tasks re-read the row and claim with guarded UPDATEs).

Every change is a guarded UPDATE on the state the sweeper saw, so several sweepers (one per server
process, plus `hubtune sweeper`) may run at once: only one of them acts on a given row.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy import select, update

from hubtune.db import session_scope
from hubtune.lifecycle import WARN, Stage, Status, add_event, transition
from hubtune.models import Job, now
from hubtune.queue import DEFAULT_TRAIN_QUEUE, PREPARE, PUBLISH, TRAIN, ring
from hubtune.settings import Settings, get_settings

log = logging.getLogger(__name__)
WORKER_LOST = "worker_lost"


@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    rung: list[tuple[str, str]] = field(default_factory=list)  # (task, job id)


def sweep(settings: Settings | None = None) -> SweepReport:
    """One pass over the jobs table; returns what it changed."""
    settings = settings or get_settings()
    report = SweepReport()
    t = now()
    with session_scope() as session:
        expired = session.execute(
            select(Job.id, Job.lease_token, Job.lease_owner, Job.attempts, Job.max_attempts, Job.queue, Job.stage)
            .where(Job.status == Status.RUNNING.value, Job.lease_owner.is_not(None), Job.lease_expires_at < t)
        ).all()
    for row in expired:
        with session_scope() as session:
            if row.stage == Stage.PUBLISHING.value:
                _release_publish(session, row, t, report)
            else:
                _recover_training(session, row, t, report)
    stale = t - settings.requeue_after_seconds
    _re_ring(report, TRAIN, stale, Job.status == Status.QUEUED.value)
    _re_ring(report, PREPARE, stale, Job.status == Status.VALIDATING_FILES.value)
    _re_ring(report, PUBLISH, stale, Job.status == Status.RUNNING.value, Job.stage == Stage.PUBLISHING.value,
             Job.lease_owner.is_(None))
    return report


def _recover_training(session, row, t: float, report: SweepReport) -> None:
    # The guard repeats what we saw: the same token, still expired. A heartbeat in between wins.
    guard = dict(expect=Status.RUNNING, expect_token=row.lease_token, where=(Job.lease_expires_at < t,))
    lost = f"Worker {row.lease_owner} lost (its lease expired)"
    if row.attempts >= row.max_attempts:
        message = f"{lost}; attempt {row.attempts} of {row.max_attempts} was the last, the job failed"
        error = {"code": WORKER_LOST, "message": message, "param": None}
        if transition(session, row.id, Status.FAILED, level="error", message=message, error=error,
                      lease_token=row.lease_token + 1, stage=None, **guard):
            report.failed.append(row.id)
        return
    message = f"{lost}; re-queued, attempt {row.attempts + 1} of {row.max_attempts}"
    # A new token fences the old holder out even if it wakes up (SIGSTOP, a network partition).
    if transition(session, row.id, Status.QUEUED, level=WARN, message=message,
                  data={"attempt": row.attempts + 1, "max_attempts": row.max_attempts},
                  lease_token=row.lease_token + 1, lease_owner=None, lease_expires_at=None, stage=None, **guard):
        ring(session, TRAIN, row.id, queue=row.queue or DEFAULT_TRAIN_QUEUE)
        report.requeued.append(row.id)
        report.rung.append((TRAIN, row.id))


def _release_publish(session, row, t: float, report: SweepReport) -> None:
    """A publisher died: free its lease (new token) so the next publish task can claim the stage."""
    stmt = (
        update(Job)
        .where(Job.id == row.id, Job.status == Status.RUNNING.value, Job.stage == Stage.PUBLISHING.value,
               Job.lease_token == row.lease_token, Job.lease_expires_at < t)
        .values(lease_owner=None, lease_expires_at=None, lease_token=row.lease_token + 1, updated_at=t)
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount == 1:
        add_event(session, row.id, f"Publisher {row.lease_owner} lost (its lease expired); publishing again",
                  level=WARN)
        ring(session, PUBLISH, row.id)
        report.rung.append((PUBLISH, row.id))


def _re_ring(report: SweepReport, task: str, stale: float, *conditions) -> None:
    """Ring `task` again for jobs matching `conditions` untouched since `stale`; touching updated_at
    (guarded on the value seen) makes one sweeper ring once per requeue_after_seconds."""
    with session_scope() as session:
        rows = session.execute(select(Job.id, Job.queue, Job.updated_at)
                               .where(*conditions, Job.updated_at < stale).limit(500)).all()
    for row in rows:
        with session_scope() as session:
            stmt = (update(Job).where(Job.id == row.id, Job.updated_at == row.updated_at, *conditions)
                    .values(updated_at=now()).execution_options(synchronize_session=False))
            if session.execute(stmt).rowcount != 1:
                continue
            queue = (row.queue or DEFAULT_TRAIN_QUEUE) if task == TRAIN else None
            ring(session, task, row.id, queue=queue)
            report.rung.append((task, row.id))


def run_forever(stop: threading.Event, settings: Settings | None = None) -> None:
    """Sweep every `sweep_interval_seconds` until `stop` is set; an error (database or broker down)
    is logged and the next pass tries again."""
    settings = settings or get_settings()
    while not stop.is_set():
        try:
            report = sweep(settings)
            if report.requeued or report.failed:
                log.warning("sweeper: re-queued %s, failed %s", report.requeued, report.failed)
        except Exception:  # noqa: BLE001 - the sweeper must outlive any blip
            log.exception("sweep failed; retrying in %ss", settings.sweep_interval_seconds)
        stop.wait(settings.sweep_interval_seconds)


def start_thread(settings: Settings | None = None) -> threading.Event:
    """Run the sweeper in a daemon thread of this process; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=run_forever, args=(stop, settings), name="hubtune-sweeper", daemon=True).start()
    return stop
