"""Celery tasks. Each takes a job id, re-reads the row and does nothing when the work is done or
owned by someone else; the row, not the message, says what to do. Settings come from the app running
the task (hubtune.queue.settings_of), never from the environment of the module doing the work."""

from __future__ import annotations

from hubtune.queue import NOTIFY, PREPARE, PUBLISH, PUSH_CHECKPOINT, TRAIN, get_celery, settings_of

app = get_celery()


@app.task(name=PREPARE, bind=True)
def prepare(self, job_id: str) -> None:
    from worker.prepare import run_prepare

    run_prepare(job_id, settings_of(self.app))


@app.task(name=TRAIN, bind=True)
def train(self, job_id: str) -> None:
    from worker.train import run_train

    run_train(job_id, settings_of(self.app))


@app.task(name=PUBLISH, bind=True)
def publish(self, job_id: str) -> None:
    from worker.publish import run_publish

    run_publish(job_id, settings_of(self.app))


@app.task(name=NOTIFY, bind=True)
def notify(self, job_id: str) -> None:
    from worker.notify import run_notify

    run_notify(job_id, settings_of(self.app))


@app.task(name=PUSH_CHECKPOINT, bind=True)
def push_checkpoint(self, job_id: str) -> None:
    from worker.publish import run_push_checkpoint

    run_push_checkpoint(job_id, settings_of(self.app))
