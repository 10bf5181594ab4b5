"""The doorbell for completion notifications, rung by every terminal transition of a job that named a
webhook_url. Sent after commit like other doorbells, but a broker failure here is only logged: the
job's own change (e.g. a cancel answered to a user) must not fail because a notification could not be
queued."""

from __future__ import annotations

import logging

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from hubtune.models import Job
from hubtune.queue import NOTIFY, TASK_QUEUES, get_celery

log = logging.getLogger(__name__)
_PENDING = "hubtune_notifications"


def after_terminal(session: Session, job_id: str) -> None:
    """Called by lifecycle.transition once a job reached succeeded, failed or cancelled."""
    url = session.execute(select(Job.webhook_url).where(Job.id == job_id)).scalar_one_or_none()
    if url:
        session.info.setdefault(_PENDING, []).append((NOTIFY, job_id))


def ring_soft(session: Session, task: str, job_id: str) -> None:
    """Like hubtune.queue.ring, for doorbells whose loss must not fail the caller's request."""
    session.info.setdefault(_PENDING, []).append((task, job_id))


def _send(session: Session) -> None:
    pending = session.info.pop(_PENDING, [])
    if not pending:
        return
    app = session.info.get("hubtune_celery") or get_celery()
    for task, job_id in pending:
        try:
            app.send_task(task, args=[job_id], queue=TASK_QUEUES[task])
        except Exception:  # noqa: BLE001 - see the module docstring
            log.exception("could not queue %s for job %s", task, job_id)


def _drop(session: Session) -> None:
    session.info.pop(_PENDING, None)


event.listen(Session, "after_commit", _send)
event.listen(Session, "after_rollback", _drop)
