"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, pause, resume; events, metrics and checkpoints."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sqlalchemy.exc import IntegrityError

from hubtune import jobs
from hubtune.models import Job
from hubtune.spec import JobRequest
from server import crud, idempotency
from server.deps import CurrentKey, SessionDep, SettingsDep, StorageDep
from server.metadata_filter import METADATA_DOC, MetadataFilter
from server.schemas import (
    CheckpointList, CheckpointPublic, EventList, EventPublic, JobList, JobPublic, MetricsPoint, MetricsSeries,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"])

Limit = Annotated[int, Query(ge=1, le=100)]
SeriesLimit = Annotated[int, Query(ge=1, le=10000)]
IDEMPOTENCY_DOC = (
    "Makes retries safe: the same key with the same body returns the job the first request created; "
    "the same key with another body is a 409."
)


@router.post("", response_model=JobPublic)
def create_job(
    session: SessionDep, key: CurrentKey, settings: SettingsDep, body: JobRequest,
    idempotency_key: Annotated[str | None, Header(alias=idempotency.HEADER, description=IDEMPOTENCY_DOC)] = None,
) -> JobPublic:
    ikey = idempotency.check_key(idempotency_key)
    digest = idempotency.request_hash(body) if ikey else ""
    if ikey and (earlier := idempotency.replay(session, key.owner, ikey, digest)) is not None:
        return JobPublic.of(earlier)  # the same request again: the same job, and no second doorbell
    job = crud.create_job(session, key, body, settings)
    job_id = job.id
    if ikey:
        idempotency.remember(session, key.owner, ikey, digest, job_id)
    try:
        session.commit()  # the prepare doorbell goes out here, after the row is committed
    except IntegrityError:
        # Only the idempotency key's primary key can clash: a concurrent request with the same key
        # won. Our job was rolled back with it (no doorbell went out); answer with the winner's job.
        session.rollback()
        earlier = idempotency.replay(session, key.owner, ikey, digest) if ikey else None
        if earlier is None:
            raise
        return JobPublic.of(earlier)
    except Exception:
        # The commit may have succeeded and only the doorbell failed (broker down): then the job exists
        # and answering 500 would make the client submit it twice.
        session.close()  # the transaction is over either way (committed, or failed and rolled back)
        if session.get(Job, job_id) is None:
            raise
        log.exception("job %s was created but its prepare message could not be sent", job_id)
    return JobPublic.of(job)


@router.get("", response_model=JobList)
def list_jobs(
    request: Request, session: SessionDep, key: CurrentKey, after: str | None = None, limit: Limit = 20,
    status: str | None = None, owner: str | None = None, model: str | None = None,
    metadata: Annotated[str | None, Query(description=METADATA_DOC)] = None,
) -> JobList:
    # metadata[key]=value pairs are not one named parameter: read them from the query string.
    wanted = MetadataFilter.from_query(request.query_params.multi_items())
    rows, has_more = crud.list_jobs(session, key, after=after, limit=limit, status=status, owner=owner, model=model,
                                    metadata=wanted)
    return JobList(data=[JobPublic.of(r) for r in rows], has_more=has_more)


@router.get("/{fine_tuning_job_id}", response_model=JobPublic)
def retrieve_job(session: SessionDep, key: CurrentKey, fine_tuning_job_id: str) -> JobPublic:
    return JobPublic.of(crud.get_job(session, key, fine_tuning_job_id))


def _change(session: SessionDep, key: CurrentKey, job_id: str, action) -> JobPublic:
    job = crud.get_job(session, key, job_id)
    action(session, job)
    session.commit()
    session.refresh(job)  # transition() updates the row behind the session's back
    return JobPublic.of(job)


@router.post("/{fine_tuning_job_id}/cancel", response_model=JobPublic)
def cancel_job(session: SessionDep, key: CurrentKey, fine_tuning_job_id: str) -> JobPublic:
    return _change(session, key, fine_tuning_job_id, jobs.cancel_job)


@router.post("/{fine_tuning_job_id}/pause", response_model=JobPublic)
def pause_job(session: SessionDep, key: CurrentKey, fine_tuning_job_id: str) -> JobPublic:
    return _change(session, key, fine_tuning_job_id, jobs.pause_job)


@router.post("/{fine_tuning_job_id}/resume", response_model=JobPublic)
def resume_job(session: SessionDep, key: CurrentKey, fine_tuning_job_id: str) -> JobPublic:
    return _change(session, key, fine_tuning_job_id, jobs.resume_job)


@router.post("/{fine_tuning_job_id}/publish", response_model=JobPublic)
def publish_job(session: SessionDep, key: CurrentKey, storage: StorageDep, fine_tuning_job_id: str) -> JobPublic:
    """Push a failed job's kept artifact to the hub again, without retraining."""
    return _change(session, key, fine_tuning_job_id,
                   lambda s, job: jobs.retry_publish(s, job, key=key, storage=storage))


@router.get("/{fine_tuning_job_id}/events", response_model=EventList)
def list_events(
    session: SessionDep, key: CurrentKey, fine_tuning_job_id: str, after: str | None = None, limit: Limit = 20
) -> EventList:
    job = crud.get_job(session, key, fine_tuning_job_id)
    rows, has_more = crud.list_events(session, job, after=after, limit=limit)
    return EventList(data=[EventPublic.of(r) for r in rows], has_more=has_more)


@router.get("/{fine_tuning_job_id}/metrics", response_model=MetricsSeries)
def metrics_series(
    session: SessionDep, key: CurrentKey, fine_tuning_job_id: str, after: str | None = None,
    limit: SeriesLimit = 1000,
) -> MetricsSeries:
    """Every logged step's metrics, oldest first, from after the point `after` (the charts' series; the
    events show a long run's steps thinned)."""
    job = crud.get_job(session, key, fine_tuning_job_id)
    rows, has_more = crud.metrics_series(session, job, after=after, limit=limit)
    return MetricsSeries(data=[MetricsPoint.of(r) for r in rows], has_more=has_more)


@router.get("/{fine_tuning_job_id}/checkpoints", response_model=CheckpointList)
def list_checkpoints(
    session: SessionDep, key: CurrentKey, fine_tuning_job_id: str, after: str | None = None, limit: Limit = 10
) -> CheckpointList:
    job = crud.get_job(session, key, fine_tuning_job_id)
    rows, has_more = crud.list_checkpoints(session, job, after=after, limit=limit)
    data = [CheckpointPublic.of(r, job) for r in rows]
    return CheckpointList(
        data=data, has_more=has_more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )
