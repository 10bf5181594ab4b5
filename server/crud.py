"""Queries behind the routes: owner scoping and cursor pages; job creation joins the core's rules
(hubtune.jobs) to the hub plugin's naming rules and the server's model look-up."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from hubtune import jobs, step_events
from hubtune.jobs import HubNames
from hubtune.lifecycle import Status
from hubtune.lineage import CHECKPOINT_PREFIX, resolve_parent
from hubtune.models import ApiKey, Checkpoint, File, Job, JobEvent
from hubtune.settings import Settings
from hubtune.spec import JobRequest
from plugin import split_model_ref, validate_repo_id
from plugin.datasets import is_dataset_ref, parse_dataset_ref
from server.errors import ApiError, bad_request, not_found
from server.hub_models import check_model_exists
from server.metadata_filter import MetadataFilter
from server.schemas import EVENT_PREFIX

FINE_TUNE = jobs.FINE_TUNE

# The hub plugin's naming rules, which the core's job checks take as an argument (hubtune may not
# import the plugin).
HUB_NAMES = HubNames(split_model_ref=split_model_ref, validate_repo_id=validate_repo_id,
                     is_dataset_ref=is_dataset_ref, parse_dataset_ref=parse_dataset_ref)
_clean_id = jobs.clean_id


def page(session: Session, stmt: Select, limit: int) -> tuple[list[Any], bool]:
    """Run `stmt` for one page: (rows, has_more), fetching one row more than asked."""
    rows = list(session.execute(stmt.limit(limit + 1)).scalars())
    return rows[:limit], len(rows) > limit


# --- files ------------------------------------------------------------------------------------------


def visible(stmt: Select, model: type, key: ApiKey) -> Select:
    return stmt if key.is_admin else stmt.where(model.owner == key.owner)


def get_file(session: Session, key: ApiKey, file_id: str) -> File:
    row = session.get(File, file_id) if _clean_id(file_id) else None
    if row is None or row.deleted_at is not None or (row.owner != key.owner and not key.is_admin):
        raise not_found("file", file_id)
    return row


def list_files(
    session: Session, key: ApiKey, *, purpose: str | None, after: str | None, limit: int, order: str
) -> tuple[list[File], bool]:
    stmt = visible(select(File).where(File.deleted_at.is_(None)), File, key)
    if purpose:
        stmt = stmt.where(File.purpose == purpose)
    if after:
        if not _clean_id(after):
            raise bad_request("Invalid cursor", param="after", code="invalid_cursor")
        stmt = stmt.where(File.id < after if order == "desc" else File.id > after)
    stmt = stmt.order_by(File.id.desc() if order == "desc" else File.id.asc())
    return page(session, stmt, limit)


# --- jobs -------------------------------------------------------------------------------------------


def get_job(session: Session, key: ApiKey, job_id: str) -> Job:
    row = session.get(Job, job_id) if _clean_id(job_id) else None
    if row is None or (row.owner != key.owner and not key.is_admin):
        raise not_found("fine-tuning job", job_id)
    return row


def list_jobs(
    session: Session, key: ApiKey, *, after: str | None, limit: int,
    status: str | None = None, owner: str | None = None, model: str | None = None,
    metadata: MetadataFilter | None = None,
) -> tuple[list[Job], bool]:
    """A page of jobs, newest first. Each filter rides an (column, id) index so a page stays a short
    index range scan however many jobs there are."""
    stmt = visible(select(Job), Job, key)
    if owner:
        if not key.is_admin and owner != key.owner:
            raise ApiError(403, "Only an admin key can list another owner's jobs.", param="owner",
                           code="forbidden")
        stmt = stmt.where(Job.owner == owner)
    if status:
        if status not in {s.value for s in Status}:
            raise bad_request(f"Invalid status '{status}': expected one of {', '.join(s.value for s in Status)}.",
                              param="status", code="invalid_value")
        stmt = stmt.where(Job.status == status)
    if model:
        stmt = stmt.where(Job.model == model)
    if metadata is not None:
        # No index of its own: it narrows the range the owner's (owner, id) index gives. A GIN index on
        # the spec's metadata would serve an admin's all-owner filter, at a migration's cost.
        stmt = metadata.apply(stmt)
    if after:
        if not _clean_id(after):
            raise bad_request("Invalid cursor", param="after", code="invalid_cursor")
        stmt = stmt.where(Job.id < after)
    return page(session, stmt.order_by(Job.id.desc()), limit)


def check_file(session: Session, key: ApiKey, file_id: str, param: str) -> None:
    jobs.check_file(session, key, file_id, param, HUB_NAMES)


def create_job(session: Session, key: ApiKey, request: JobRequest, settings: Settings) -> Job:
    """The core's checks (hubtune.jobs), then whether the hub has the model (a look-up only the server
    makes, bounded in time), then the job row and its prepare doorbell (sent once the caller commits)."""
    jobs.check_request(session, key, request, settings, HUB_NAMES)
    lineage = resolve_parent(session, key, request.model)  # an earlier job or checkpoint of the owner's
    if lineage is None:
        check_model_exists(session, settings, key, request.model)  # before the owner's lock in add_job
    return jobs.add_job(session, key, request, settings, lineage=lineage)


# --- events and checkpoints -------------------------------------------------------------------------


def _int_cursor(after: str | None, prefix: str) -> int | None:
    if not after:
        return None
    raw = after[len(prefix) :] if after.startswith(prefix) else after
    if not raw.isdigit() or len(raw) > 18:
        raise bad_request(f"Invalid cursor '{after}': expected an id like '{prefix}123'.", param="after",
                          code="invalid_cursor")
    return int(raw)


def list_events(session: Session, job: Job, *, after: str | None, limit: int) -> tuple[list[JobEvent], bool]:
    # A thinned-away step (hubtune.step_events) is a point of the metrics series, not an event.
    stmt = select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type != step_events.SERIES)
    if (cursor := _int_cursor(after, EVENT_PREFIX)) is not None:
        stmt = stmt.where(JobEvent.id < cursor)
    return page(session, stmt.order_by(JobEvent.id.desc()), limit)


def metrics_series(session: Session, job: Job, *, after: str | None, limit: int) -> tuple[list[JobEvent], bool]:
    """Every logged step of the job, oldest first (the events show a long run's steps thinned)."""
    stmt = select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type.in_(step_events.SERIES_TYPES))
    if (cursor := _int_cursor(after, EVENT_PREFIX)) is not None:
        stmt = stmt.where(JobEvent.id > cursor)
    return page(session, stmt.order_by(JobEvent.id), limit)


def list_checkpoints(
    session: Session, job: Job, *, after: str | None, limit: int
) -> tuple[list[Checkpoint], bool]:
    stmt = select(Checkpoint).where(Checkpoint.job_id == job.id)
    if (cursor := _int_cursor(after, CHECKPOINT_PREFIX)) is not None:
        stmt = stmt.where(Checkpoint.id < cursor)
    return page(session, stmt.order_by(Checkpoint.id.desc()), limit)
