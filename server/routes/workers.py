"""/v1/workers: the worker processes online (admin keys only), with their machine and current job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from hubtune.models import ApiKey, Job, WorkerRecord, now
from hubtune.settings import Settings
from server.deps import CurrentKey, SessionDep, SettingsDep
from server.errors import ApiError

router = APIRouter(prefix="/workers", tags=["monitoring"])


class CurrentJob(BaseModel):
    id: str
    status: str | None = None
    stage: str | None = None
    model: str | None = None


class WorkerPublic(BaseModel):
    object: str = "worker"
    id: str
    hostname: str
    pid: int
    queues: list[str]
    # {"gpus": [{"name", "memory_bytes", "memory_used_bytes"?, "utilization"?}], "cpu_count", "ram_bytes"}
    resources: dict[str, Any]
    current_job: CurrentJob | None
    started_at: int
    last_heartbeat: int
    online: bool


class WorkerList(BaseModel):
    object: str = "list"
    data: list[WorkerPublic]
    has_more: bool = False


def stale_after(settings: Settings) -> float:
    """Seconds without a heartbeat after which a worker counts as gone (it missed several beats)."""
    return max(30.0, 4 * settings.heartbeat_seconds)


def online_workers(session: Session, settings: Settings, *, include_stale: bool = False) -> list[WorkerRecord]:
    stmt = select(WorkerRecord).order_by(WorkerRecord.hostname, WorkerRecord.id)
    if not include_stale:
        stmt = stmt.where(WorkerRecord.last_heartbeat >= now() - stale_after(settings))
    return list(session.execute(stmt).scalars())


def require_admin(key: ApiKey) -> None:
    if not key.is_admin:
        raise ApiError(403, "Only an admin key can see the workers.", code="forbidden")


def _public(row: WorkerRecord, job: Job | None, cutoff: float) -> WorkerPublic:
    current = None
    if row.current_job_id:
        current = CurrentJob(id=row.current_job_id, status=job.status if job else None,
                             stage=job.stage if job else None, model=job.model if job else None)
    return WorkerPublic(
        id=row.id, hostname=row.hostname, pid=row.pid, queues=list(row.queues or []),
        resources=dict(row.resources or {}), current_job=current, started_at=int(row.started_at),
        last_heartbeat=int(row.last_heartbeat), online=row.last_heartbeat >= cutoff,
    )


@router.get("", response_model=WorkerList)
def list_workers(session: SessionDep, key: CurrentKey, settings: SettingsDep, all: bool = False) -> WorkerList:
    require_admin(key)
    rows = online_workers(session, settings, include_stale=all)
    job_ids = {r.current_job_id for r in rows if r.current_job_id}
    jobs = {j.id: j for j in session.execute(select(Job).where(Job.id.in_(job_ids))).scalars()} if job_ids else {}
    cutoff = now() - stale_after(settings)
    return WorkerList(data=[_public(r, jobs.get(r.current_job_id or ""), cutoff) for r in rows])
