"""Queue wiring: the Celery app, the one table of tasks and their queues, and doorbells rung only after commit.

The server sends tasks by name; only worker/ defines them, so the API process never imports torch.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery
from sqlalchemy import event
from sqlalchemy.orm import Session

from hubtune.settings import Settings, get_settings

PREPARE = "hubtune.prepare"
TRAIN = "hubtune.train"
PUBLISH = "hubtune.publish"
NOTIFY = "hubtune.notify"
PUSH_CHECKPOINT = "hubtune.push_checkpoint"

PREPARE_QUEUE = "prepare"
PUBLISH_QUEUE = "publish"
DEFAULT_TRAIN_QUEUE = "train"
ALL_QUEUES = (PREPARE_QUEUE, DEFAULT_TRAIN_QUEUE, PUBLISH_QUEUE)

# Every task and the queue it runs on. Train has no fixed queue: prepare routes each job to the training
# queue its memory estimate fits (hubtune.routing), and the doorbell names that queue. Notifications and
# checkpoint pushes are short CPU work, so they share the publish queue.
TASK_QUEUES: dict[str, str | None] = {
    PREPARE: PREPARE_QUEUE,
    TRAIN: None,
    PUBLISH: PUBLISH_QUEUE,
    NOTIFY: PUBLISH_QUEUE,
    PUSH_CHECKPOINT: PUBLISH_QUEUE,
}


def _transport_options(settings: Settings) -> dict:
    if not settings.resolved_broker_url.startswith("filesystem"):
        # Redis re-delivers an unacked message after this many seconds; train acks early, so this only
        # matters for prepare/publish, which are short and idempotent.
        return {"visibility_timeout": 3600}
    root = settings.queue_dir
    for sub in ("messages", "processed", "control"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(root / "messages"),
        "data_folder_out": str(root / "messages"),
        "processed_folder": str(root / "processed"),
        "control_folder": str(root / "control"),
        "polling_interval": 0.2,
    }


def make_celery(settings: Settings) -> Celery:
    app = Celery("hubtune", broker=settings.resolved_broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        # Early ack: a long training must not be re-delivered (and run twice) while it runs; the
        # sweeper, not the broker, recovers jobs whose worker died.
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings),
        task_default_queue=PREPARE_QUEUE,
        task_routes={task: {"queue": queue} for task, queue in TASK_QUEUES.items() if queue},
        task_create_missing_queues=True,
    )
    # The worker's tasks read their settings from the app that runs them (settings_of), as the server's
    # routes read theirs from the server app: one place builds them, the code under it takes them as given.
    app.hubtune_settings = settings
    return app


def settings_of(app: Celery) -> Settings:
    """The settings `app` was made from (make_celery)."""
    return app.hubtune_settings


@lru_cache(maxsize=1)
def get_celery() -> Celery:
    return make_celery(get_settings())


def _send_pending(session: Session) -> None:
    pending = session.info.pop("hubtune_doorbells", [])
    if not pending:
        return
    # A session may name its own Celery app (the API server built for other settings does); else the process one.
    app = session.info.get("hubtune_celery") or get_celery()
    for task, job_id, queue in pending:
        app.send_task(task, args=[job_id], queue=queue)


def _drop_pending(session: Session) -> None:
    session.info.pop("hubtune_doorbells", None)


event.listen(Session, "after_commit", _send_pending)
# after_rollback fires only when the real database transaction rolls back, not for savepoints.
event.listen(Session, "after_rollback", _drop_pending)


def ring(session: Session, task: str, job_id: str, *, queue: str | None = None) -> None:
    """Ask for `task(job_id)` once the session's transaction commits; a rollback sends nothing."""
    session.info.setdefault("hubtune_doorbells", []).append((task, job_id, queue))
