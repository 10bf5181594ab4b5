"""A worker's own disk (its data dir: cache, scratch checkpoints, the hub cache) running out.

A full disk is the machine's fault, not the job's: the job goes back to the queue (the attempt counts,
so a job that fills every disk still ends), rung at once, and another machine goes on from the stored
checkpoint, while a worker short of space takes no new job until space is freed: its guard
(worker/disk_guard.py) stops it taking doorbells, and one it took before the guard saw the disk is
handed on to another worker.
"""

from __future__ import annotations

import errno
import shutil
import time

from sqlalchemy import select

from hubtune.db import session_scope
from hubtune.lifecycle import Stage, Status
from hubtune.models import Job
from hubtune.queue import DEFAULT_TRAIN_QUEUE, TRAIN, ring
from hubtune.settings import Settings


def free_bytes(settings: Settings) -> int:
    folder = settings.data_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(folder).free


def short_of_space(settings: Settings) -> bool:
    return bool(settings.min_free_disk_bytes) and free_bytes(settings) < settings.min_free_disk_bytes


def disk_full(exc: BaseException, settings: Settings) -> bool:
    """ENOSPC anywhere in the chain, or a failure while the data dir is short of space (torch's writer
    words a full disk as "file write failed", without the errno)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC or "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return short_of_space(settings)


# Declining leaves the doorbell with nobody: pause before ringing it again, so that a full worker with
# no other worker beside it (its guard not yet run) rings at most once a second.
HAND_ON_PAUSE_SECONDS = 1.0


def hand_on(task: str, job_id: str) -> None:
    """Ring `task` for `job_id` again, for another worker: this one declined it, short of space. Only while
    the job still waits for that task (queued to train, or publishing with no publisher), so a stale
    doorbell is dropped rather than passed around."""
    time.sleep(HAND_ON_PAUSE_SECONDS)
    with session_scope() as session:
        row = session.execute(select(Job.status, Job.stage, Job.lease_owner, Job.queue)
                              .where(Job.id == job_id)).one_or_none()
        if row is None:
            return
        if task == TRAIN and row.status == Status.QUEUED.value:
            ring(session, TRAIN, job_id, queue=row.queue or DEFAULT_TRAIN_QUEUE)
        elif task != TRAIN and row.stage == Stage.PUBLISHING.value and row.lease_owner is None:
            ring(session, task, job_id)
