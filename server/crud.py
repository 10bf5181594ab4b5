"""Queries and writes behind the routes: owner scoping, cursor pages, job creation and cancellation."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Select, func, select, text
from sqlalchemy.orm import Session

from hubtune import step_events
from hubtune.destinations import DestinationRefused, check_url
from hubtune.ids import new_id
from hubtune.lifecycle import TERMINAL, Status, add_event, still_stopping, transition
from hubtune.models import ApiKey, Checkpoint, File, Job, JobEvent, now
from hubtune.namespaces import Rights, has_hub_credential, write_refusal
from hubtune.queue import DEFAULT_TRAIN_QUEUE, PREPARE, TRAIN, ring
from hubtune.settings import Settings
from hubtune.spec import JobRequest
from plugin.datasets import is_dataset_ref, parse_dataset_ref
from plugin.errors import InvalidRepoId
from server.errors import ApiError, bad_request, not_found
from server.hub_models import check_model_exists
from server.repo_ids import InvalidModelRef, check_model_ref, check_repo_id
from server.schemas import CHECKPOINT_PREFIX, EVENT_PREFIX

FINE_TUNE = "fine-tune"
CANCELLABLE = frozenset({Status.VALIDATING_FILES, Status.QUEUED, Status.RUNNING, Status.PAUSED})
PAUSABLE = frozenset({Status.QUEUED, Status.RUNNING})


def _clean_id(value: str) -> str | None:
    # PostgreSQL text cannot hold NUL; such an id can match nothing, so answer 404 rather than 500.
    return None if "\x00" in value else value


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
    if after:
        if not _clean_id(after):
            raise bad_request("Invalid cursor", param="after", code="invalid_cursor")
        stmt = stmt.where(Job.id < after)
    return page(session, stmt.order_by(Job.id.desc()), limit)


def _find_nul(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) holding a NUL character, which PostgreSQL refuses."""
    if isinstance(value, str):
        return path or "body" if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if "\x00" in str(k):
                return sub
            if (found := _find_nul(v, sub)) is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            if (found := _find_nul(v, f"{path}[{i}]")) is not None:
                return found
    return None


def _check_file(session: Session, key: ApiKey, file_id: str, param: str) -> None:
    if is_dataset_ref(file_id):  # a hub dataset file: checked here by form, pulled and pinned by prepare
        try:
            parse_dataset_ref(file_id)
        except InvalidRepoId as exc:
            raise bad_request(str(exc), param=param, code="invalid_dataset") from None
        return
    row = session.get(File, file_id) if _clean_id(file_id) else None
    if row is None or row.deleted_at is not None or (row.owner != key.owner and not key.is_admin):
        raise bad_request(f"File '{file_id}' not found.", param=param, code="file_not_found")
    if row.purpose != FINE_TUNE:
        raise bad_request(
            f"File '{file_id}' has purpose '{row.purpose}', expected '{FINE_TUNE}'.", param=param,
            code="invalid_file_purpose",
        )


# Jobs that wait for a worker: what max_queued_jobs_per_owner counts.
WAITING = (Status.VALIDATING_FILES.value, Status.QUEUED.value, Status.PAUSED.value)
QUEUED_LIMIT_RETRY_AFTER = 60  # seconds: a hint for scripts; the limit lifts when a job starts or ends


def _check_queued_limit(session: Session, key: ApiKey, settings: Settings) -> None:
    """429 when the owner already has max_queued_jobs_per_owner jobs waiting. `x-should-retry: false`
    because the limit lifts only when one of those jobs starts, not in the seconds a client would wait.
    On PostgreSQL the owner's creates take turns (a transaction-scoped advisory lock) so that racing
    requests cannot all pass the count; on SQLite writers take turns anyway."""
    limit = settings.max_queued_jobs_per_owner
    if not limit:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:owner, 0))"), {"owner": key.owner})
    waiting = session.scalar(
        select(func.count()).select_from(Job).where(Job.owner == key.owner, Job.status.in_(WAITING))
    )
    if waiting >= limit:
        raise ApiError(
            429,
            f"You have {waiting} fine-tuning jobs waiting (validating_files, queued or paused); the limit "
            f"is {limit} per owner. Wait for one to start, or cancel one, and submit again.",
            code="too_many_queued_jobs",
            headers={"Retry-After": str(QUEUED_LIMIT_RETRY_AFTER), "x-should-retry": "false"},
        )


def create_job(session: Session, key: ApiKey, request: JobRequest, settings: Settings) -> Job:
    """Check the request against the database and the hub naming rules, add the job row, its first
    event and the prepare doorbell (sent only once the caller commits)."""
    spec = request.model_dump(mode="json")
    if (nul := _find_nul(spec)) is not None:
        raise bad_request(f"Invalid value for '{nul}': NUL characters are not allowed.", param=nul,
                          code="invalid_value")
    try:
        check_model_ref(request.model)
    except InvalidModelRef as exc:
        raise bad_request(f"Invalid model '{request.model}': {exc}", param="model", code="invalid_model") from None
    if request.hub is not None and request.hub.repo_id is not None:
        try:
            check_repo_id(request.hub.repo_id)
        except InvalidModelRef as exc:
            raise bad_request(str(exc), param="hub.repo_id", code="invalid_repo_id") from None
    check_hub_repo(session, key, request)
    _check_file(session, key, request.training_file, "training_file")
    if request.webhook_url is not None:
        try:
            check_url(request.webhook_url, settings, resolve=False)
        except DestinationRefused as exc:
            raise bad_request(str(exc), param="webhook_url", code="invalid_webhook_url") from None
    if request.validation_file is not None:
        _check_file(session, key, request.validation_file, "validation_file")
    if request.priority > 0 and not key.is_admin:
        raise ApiError(403, "Only an admin key can give a job a priority above 0.", param="priority",
                       code="forbidden")
    check_model_exists(session, settings, key, request.model)  # before the owner's lock below
    _check_queued_limit(session, key, settings)

    seed = request.seed if request.seed is not None else secrets.randbelow(2**31 - 1)
    spec["seed"] = seed
    t = now()
    job = Job(
        id=new_id("ftjob"),
        owner=key.owner,
        key_id=key.id,  # publish re-checks this key's hub namespaces (hubtune.namespaces)
        status=Status.VALIDATING_FILES.value,
        model=request.model,
        training_file=request.training_file,
        validation_file=request.validation_file,
        suffix=request.suffix,
        seed=seed,
        spec=spec,
        webhook_url=request.webhook_url,
        priority=request.priority,
        attempts=0,
        max_attempts=settings.max_attempts,
        lease_token=0,
        created_at=t,
        updated_at=t,
    )
    session.add(job)
    session.flush()  # the event's foreign key needs the job row first
    add_event(session, job.id, "Created fine-tuning job", data={"job_id": job.id})
    ring(session, PREPARE, job.id)
    return job


def check_hub_repo(session: Session, key: ApiKey, request: JobRequest, *, param: str = "hub.repo_id") -> None:
    """403 naming `param` when the job would publish through the server's own hub access (the owner
    stored no hub token of their own) to a namespace the key does not own (hubtune.namespaces)."""
    repo_id = request.hub.repo_id if request.hub else None
    if repo_id is None or has_hub_credential(session, key.owner):
        return
    if (why := write_refusal(Rights.of(key), repo_id)) is not None:
        raise ApiError(403, why, param=param, code="forbidden")


def cancel_job(session: Session, job: Job) -> None:
    """Move a live job to cancelled; the worker holding it notices at its next step and stops."""
    for _ in range(5):  # the row may move (e.g. queued -> running) between our read and our update
        status = Status(job.status)
        if status == Status.CANCELLED:
            return
        if status in TERMINAL:
            raise bad_request(
                f"Fine-tuning job {job.id} has already {status.value}; only a live job can be cancelled.",
                param="fine_tuning_job_id", code="invalid_state",
            )
        if transition(
            session, job.id, Status.CANCELLED, expect=CANCELLABLE, message="Fine-tuning job cancelled",
        ):
            return
        session.refresh(job)
    raise ApiError(409, f"Fine-tuning job {job.id} is changing state; try again.", code="conflict")


def pause_job(session: Session, job: Job) -> None:
    for _ in range(5):
        status = Status(job.status)
        if status == Status.PAUSED:
            return
        if status not in PAUSABLE:
            raise bad_request(
                f"Fine-tuning job {job.id} is {status.value}; only a queued or running job can be paused.",
                param="fine_tuning_job_id", code="invalid_state",
            )
        if transition(session, job.id, Status.PAUSED, expect=PAUSABLE, message="Fine-tuning job paused"):
            return
        session.refresh(job)
    raise ApiError(409, f"Fine-tuning job {job.id} is changing state; try again.", code="conflict")


def resume_job(session: Session, job: Job) -> None:
    status = Status(job.status)
    if status in (Status.QUEUED, Status.RUNNING):
        return
    if status != Status.PAUSED:
        raise bad_request(
            f"Fine-tuning job {job.id} is {status.value}; only a paused job can be resumed.",
            param="fine_tuning_job_id", code="invalid_state",
        )
    if still_stopping(job):
        raise ApiError(
            409, f"Fine-tuning job {job.id} is still stopping: its worker is saving the pause checkpoint. "
            "Try again in a few seconds.", code="still_stopping", headers={"Retry-After": "5"},
        )
    if transition(session, job.id, Status.QUEUED, expect=Status.PAUSED, message="Fine-tuning job resumed"):
        ring(session, TRAIN, job.id, queue=job.queue or DEFAULT_TRAIN_QUEUE)
        return
    session.refresh(job)
    if Status(job.status) not in (Status.QUEUED, Status.RUNNING):
        raise ApiError(409, f"Fine-tuning job {job.id} is changing state; try again.", code="conflict")


def retry_publish(session: Session, job: Job, *, key: ApiKey) -> None:
    """failed -> running at stage publishing, with the publish doorbell: pushes the kept artifact again.
    The retry publishes with the rights of the key that asks for it (checked here, 403, and again at
    publish), so an admin or a key granted the namespace can push a job that an owner's grant no longer
    covers."""
    from pathlib import Path

    from hubtune.lifecycle import Stage
    from hubtune.queue import PUBLISH

    status = Status(job.status)
    if status != Status.FAILED:
        raise bad_request(
            f"Fine-tuning job {job.id} is {status.value}; only a job whose publishing failed can be published again.",
            param="fine_tuning_job_id", code="invalid_state",
        )
    if not job.artifact_path or not Path(job.artifact_path).is_dir():
        raise bad_request(
            f"Fine-tuning job {job.id} has no trained artifact to publish (it failed before training finished).",
            param="fine_tuning_job_id", code="no_artifact",
        )
    check_hub_repo(session, key, JobRequest.model_validate(job.spec))
    if transition(session, job.id, Status.RUNNING, expect=Status.FAILED, message="Publishing to the hub again",
                  stage=Stage.PUBLISHING.value, error=None, finished_at=None, lease_owner=None,
                  lease_expires_at=None, key_id=key.id):
        ring(session, PUBLISH, job.id)
        return
    raise ApiError(409, f"Fine-tuning job {job.id} is changing state; try again.", code="conflict")


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
