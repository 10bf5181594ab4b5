"""/v1/queues: per queue, the jobs waiting and running and the workers serving it; jobs finished per
hour. An admin key's counts cover every owner; any other key's cover its owner's own jobs only (the
worker counts stay whole), so a key learns nothing about other owners' activity. The workers' ids are
shown to admin keys only."""

from __future__ import annotations

from collections import defaultdict

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hubtune.lifecycle import Stage, Status
from hubtune.models import Job, now
from hubtune.queue import ALL_QUEUES, DEFAULT_TRAIN_QUEUE, PREPARE_QUEUE, PUBLISH_QUEUE
from server.deps import CurrentKey, SessionDep, SettingsDep
from server.routes.workers import online_workers

router = APIRouter(prefix="/queues", tags=["monitoring"])

LIVE = (Status.VALIDATING_FILES.value, Status.QUEUED.value, Status.RUNNING.value, Status.PAUSED.value)
DONE = (Status.SUCCEEDED.value, Status.FAILED.value, Status.CANCELLED.value)
HOURS = 24


class QueuePublic(BaseModel):
    object: str = "queue"
    name: str
    waiting: int = 0
    running: int = 0
    paused: int = 0
    worker_count: int = 0
    workers: list[str] | None = None  # admin keys only


class HourCount(BaseModel):
    hour: int  # Unix seconds at the start of the hour
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


class QueueList(BaseModel):
    object: str = "list"
    data: list[QueuePublic]
    has_more: bool = False
    workers_online: int
    finished_per_hour: list[HourCount]


def queue_of(status: str, stage: str | None, queue: str | None) -> str:
    """The queue a live job waits in or runs from (prepare and publish run on their own queues)."""
    if status == Status.VALIDATING_FILES.value:
        return PREPARE_QUEUE
    if status == Status.RUNNING.value and stage == Stage.PUBLISHING.value:
        return PUBLISH_QUEUE
    return queue or DEFAULT_TRAIN_QUEUE


def queue_counts(session: Session, *, owner: str | None = None) -> dict[str, dict[str, int]]:
    """{queue: {"waiting", "running", "paused"}} over live jobs (of `owner` only, when given), in one
    grouped query."""
    stmt = select(Job.status, Job.stage, Job.queue, func.count()).where(Job.status.in_(LIVE))
    if owner is not None:
        stmt = stmt.where(Job.owner == owner)
    stmt = stmt.group_by(Job.status, Job.stage, Job.queue)
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"waiting": 0, "running": 0, "paused": 0})
    for status, stage, queue, count in session.execute(stmt):
        column = {"running": "running", "paused": "paused"}.get(status, "waiting")
        out[queue_of(status, stage, queue)][column] += count
    return out


def finished_per_hour(session: Session, *, hours: int = HOURS, owner: str | None = None) -> list[HourCount]:
    end = int(now() // 3600 + 1) * 3600
    start = end - hours * 3600
    buckets = {start + 3600 * i: HourCount(hour=start + 3600 * i) for i in range(hours)}
    stmt = select(Job.finished_at, Job.status).where(Job.finished_at >= start, Job.status.in_(DONE))
    rows = session.execute(stmt if owner is None else stmt.where(Job.owner == owner))
    for finished_at, status in rows:
        bucket = buckets.get(start + int((finished_at - start) // 3600) * 3600)
        if bucket is not None:
            setattr(bucket, status, getattr(bucket, status) + 1)
    return list(buckets.values())


@router.get("", response_model=QueueList)
def list_queues(session: SessionDep, key: CurrentKey, settings: SettingsDep) -> QueueList:
    owner = None if key.is_admin else key.owner  # see the module docstring
    counts = queue_counts(session, owner=owner)
    workers = online_workers(session, settings)
    serving: dict[str, list[str]] = defaultdict(list)
    for w in workers:
        for q in w.queues or []:
            serving[q].append(w.id)
    names = sorted(set(ALL_QUEUES) | set(counts) | set(serving))
    data = [QueuePublic(name=n, **counts.get(n, {}), worker_count=len(serving[n]),
                        workers=serving[n] if key.is_admin else None) for n in names]
    return QueueList(data=data, workers_online=len(workers), finished_per_hour=finished_per_hour(session, owner=owner))
