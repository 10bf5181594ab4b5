"""Celery tasks. Each takes a job id, re-reads the row and does nothing when the work is done or
owned by someone else; the row, not the message, says what to do."""

from __future__ import annotations

from hubtune.notifications import NOTIFY, PUSH_CHECKPOINT
from hubtune.queue import PREPARE, PUBLISH, TRAIN, get_celery

app = get_celery()


@app.task(name=PREPARE)
def prepare(job_id: str) -> None:
    from worker.prepare import run_prepare

    run_prepare(job_id)


@app.task(name=TRAIN)
def train(job_id: str) -> None:
    from worker.train import run_train

    run_train(job_id)


@app.task(name=PUBLISH)
def publish(job_id: str) -> None:
    from worker.publish import run_publish

    run_publish(job_id)


@app.task(name=NOTIFY)
def notify(job_id: str) -> None:
    from worker.notify import run_notify

    run_notify(job_id)


@app.task(name=PUSH_CHECKPOINT)
def push_checkpoint(job_id: str) -> None:
    from worker.publish import run_push_checkpoint

    run_push_checkpoint(job_id)
