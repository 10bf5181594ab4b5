"""The job rules every front end shares: create (the request's checks), cancel, pause, resume and
publish again. They raise `JobError`s (hubtune.errors), never HTTP errors: the server maps codes to
statuses in one place (server/errors.py), so the same rules could serve another front end.

The hub's naming rules (model references, repo ids, dataset references) live in the hub plugin,
which the core may not import; the caller passes them in as `HubNames`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from hubtune.destinations import DestinationRefused, check_url
from hubtune.errors import JobError
from hubtune.ids import new_id
from hubtune.integrations import check_integrations
from hubtune.lineage import names_parent
from hubtune.lifecycle import Stage, Status, add_event, still_stopping, transition
from hubtune.models import ApiKey, File, Job, now
from hubtune.namespaces import Rights, has_hub_credential, write_refusal
from hubtune.queue import DEFAULT_TRAIN_QUEUE, PREPARE, PUBLISH, TRAIN, ring
from hubtune.settings import Settings
from hubtune.spec import JobRequest
from hubtune.storage import Storage

FINE_TUNE = "fine-tune"
CANCELLABLE = frozenset({Status.VALIDATING_FILES, Status.QUEUED, Status.RUNNING, Status.PAUSED})
PAUSABLE = frozenset({Status.QUEUED, Status.RUNNING})
# Jobs that wait for a worker: what max_queued_jobs_per_owner counts.
WAITING = (Status.VALIDATING_FILES.value, Status.QUEUED.value, Status.PAUSED.value)
QUEUED_LIMIT_RETRY_AFTER = 60  # seconds: a hint for scripts; the limit lifts when a job starts or ends
STILL_STOPPING_RETRY_AFTER = 5  # seconds: about how long a worker takes to save its pause checkpoint
JOB_PARAM = "fine_tuning_job_id"


@dataclass(frozen=True)
class HubNames:
    """The hub plugin's pure string checks (each raises ValueError naming what is wrong)."""

    split_model_ref: Callable[[str], Any]
    validate_repo_id: Callable[[str], Any]
    is_dataset_ref: Callable[[Any], bool]
    parse_dataset_ref: Callable[[str], Any]


def clean_id(value: str) -> str | None:
    # PostgreSQL text cannot hold NUL; such an id can match nothing, so answer "not found" rather than fail.
    return None if "\x00" in value else value


# --- create -----------------------------------------------------------------------------------------


def find_nul(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) holding a NUL character, which PostgreSQL refuses."""
    if isinstance(value, str):
        return path or "body" if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if "\x00" in str(k):
                return sub
            if (found := find_nul(v, sub)) is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            if (found := find_nul(v, f"{path}[{i}]")) is not None:
                return found
    return None


def check_file(session: Session, key: ApiKey, file_id: str, param: str, names: HubNames) -> None:
    """An uploaded fine-tune file the key may use, or a hub dataset file of the right form."""
    if names.is_dataset_ref(file_id):  # a hub dataset file: checked here by form, pulled and pinned by prepare
        try:
            names.parse_dataset_ref(file_id)
        except ValueError as exc:
            raise JobError("invalid_dataset", str(exc), param) from None
        return
    row = session.get(File, file_id) if clean_id(file_id) else None
    if row is None or row.deleted_at is not None or (row.owner != key.owner and not key.is_admin):
        raise JobError("file_not_found", f"File '{file_id}' not found.", param)
    if row.purpose != FINE_TUNE:
        raise JobError("invalid_file_purpose",
                       f"File '{file_id}' has purpose '{row.purpose}', expected '{FINE_TUNE}'.", param)


def check_hub_repo(session: Session, key: ApiKey, request: JobRequest, *, param: str = "hub.repo_id") -> None:
    """`forbidden` naming `param` when the job would publish through the server's own hub access (the
    owner stored no hub token of their own) to a namespace the key does not own (hubtune.namespaces)."""
    repo_id = request.hub.repo_id if request.hub else None
    if repo_id is None or has_hub_credential(session, key.owner):
        return
    if (why := write_refusal(Rights.of(key), repo_id)) is not None:
        raise JobError("forbidden", why, param)


def check_request(session: Session, key: ApiKey, request: JobRequest, settings: Settings, names: HubNames) -> None:
    """The checks a job request passes before any hub look-up, in the order the API has always
    reported them (the first broken rule is the answer)."""
    if (nul := find_nul(request.model_dump(mode="json"))) is not None:
        raise JobError("invalid_value", f"Invalid value for '{nul}': NUL characters are not allowed.", nul)
    if not names_parent(request.model):  # a job or checkpoint reference is resolved by hubtune.lineage
        try:
            names.split_model_ref(request.model)
        except ValueError as exc:
            raise JobError("invalid_model", f"Invalid model '{request.model}': {exc}", "model") from None
    if request.hub is not None and request.hub.repo_id is not None:
        try:
            names.validate_repo_id(request.hub.repo_id)
        except ValueError as exc:
            raise JobError("invalid_repo_id", str(exc), "hub.repo_id") from None
    check_hub_repo(session, key, request)
    check_file(session, key, request.training_file, "training_file", names)
    if request.webhook_url is not None:
        try:
            check_url(request.webhook_url, settings, resolve=False)
        except DestinationRefused as exc:
            raise JobError("invalid_webhook_url", str(exc), "webhook_url") from None
    if request.validation_file is not None:
        check_file(session, key, request.validation_file, "validation_file", names)
    if request.priority > 0 and not key.is_admin:
        raise JobError("forbidden", "Only an admin key can give a job a priority above 0.", "priority")
    check_integrations(request, settings)


def check_queued_limit(session: Session, key: ApiKey, settings: Settings) -> None:
    """`too_many_queued_jobs` when the owner already has max_queued_jobs_per_owner jobs waiting.
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
        raise JobError(
            "too_many_queued_jobs",
            f"You have {waiting} fine-tuning jobs waiting (validating_files, queued or paused); the limit "
            f"is {limit} per owner. Wait for one to start, or cancel one, and submit again.",
        )


def add_job(session: Session, key: ApiKey, request: JobRequest, settings: Settings, *,
            lineage: dict[str, Any] | None = None) -> Job:
    """Add the job row (after the owner's queued limit), its first event and the prepare doorbell (sent
    only once the caller commits). The request's checks (check_request) come first; `lineage` is the
    earlier job or checkpoint it continues (hubtune.lineage.resolve_parent)."""
    check_queued_limit(session, key, settings)
    spec = request.model_dump(mode="json")
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
        lineage=lineage,
        attempts=0,
        max_attempts=settings.max_attempts,
        lease_token=0,
        created_at=t,
        updated_at=t,
    )
    session.add(job)
    session.flush()  # the event's foreign key needs the job row first
    add_event(session, job.id, "Created fine-tuning job", data={"job_id": job.id})
    if lineage is not None:
        parent = lineage["parent"]
        named = parent.get("checkpoint_id") or parent["job_id"]
        add_event(session, job.id, f"Continuing from {named} of fine-tuning job {parent['job_id']}",
                  data={"lineage": {k: lineage[k] for k in ("parent", "kind", "base_model", "base_revision")}})
    ring(session, PREPARE, job.id)
    return job


# --- cancel, pause, resume, publish again -----------------------------------------------------------


def changing_state(job: Job) -> JobError:
    """Another writer moved the row between our read and our guarded update, more than we retry."""
    return JobError("conflict", f"Fine-tuning job {job.id} is changing state; try again.")


def invalid_state(message: str, code: str = "invalid_state") -> JobError:
    return JobError(code, message, JOB_PARAM)


def _move(session: Session, job: Job, to: Status, *, allowed: frozenset[Status], message: str,
          refusal: Callable[[Status], str]) -> None:
    """Move `job` to `to` from any `allowed` status; nothing when it is there already."""
    for _ in range(5):  # the row may move (e.g. queued -> running) between our read and our update
        status = Status(job.status)
        if status == to:
            return
        if status not in allowed:
            raise invalid_state(refusal(status))
        if transition(session, job.id, to, expect=allowed, message=message):
            return
        session.refresh(job)
    raise changing_state(job)


def cancel_job(session: Session, job: Job) -> None:
    """Move a live job to cancelled; the worker holding it notices at its next step and stops."""
    _move(session, job, Status.CANCELLED, allowed=CANCELLABLE, message="Fine-tuning job cancelled",
          refusal=lambda s: f"Fine-tuning job {job.id} has already {s.value}; only a live job can be cancelled.")


def pause_job(session: Session, job: Job) -> None:
    _move(session, job, Status.PAUSED, allowed=PAUSABLE, message="Fine-tuning job paused",
          refusal=lambda s: f"Fine-tuning job {job.id} is {s.value}; only a queued or running job can be paused.")


def resume_job(session: Session, job: Job) -> None:
    status = Status(job.status)
    if status in (Status.QUEUED, Status.RUNNING):
        return
    if status != Status.PAUSED:
        raise invalid_state(f"Fine-tuning job {job.id} is {status.value}; only a paused job can be resumed.")
    if still_stopping(job):
        raise JobError("still_stopping", f"Fine-tuning job {job.id} is still stopping: its worker is saving the "
                       "pause checkpoint. Try again in a few seconds.")
    if transition(session, job.id, Status.QUEUED, expect=Status.PAUSED, message="Fine-tuning job resumed"):
        ring(session, TRAIN, job.id, queue=job.queue or DEFAULT_TRAIN_QUEUE)
        return
    session.refresh(job)
    if Status(job.status) not in (Status.QUEUED, Status.RUNNING):
        raise changing_state(job)


def retry_publish(session: Session, job: Job, *, key: ApiKey, storage: Storage) -> None:
    """failed -> running at stage publishing, with the publish doorbell: pushes the kept artifact again.
    The retry publishes with the rights of the key that asks for it (checked here, and again at
    publish), so an admin or a key granted the namespace can push a job that an owner's grant no longer
    covers."""
    status = Status(job.status)
    if status != Status.FAILED:
        raise invalid_state(f"Fine-tuning job {job.id} is {status.value}; only a job whose publishing failed "
                            "can be published again.")
    if not job.artifact_path or not storage.has_artifact(job.artifact_path):
        raise invalid_state(f"Fine-tuning job {job.id} has no trained artifact to publish (it failed before "
                            "training finished).", code="no_artifact")
    check_hub_repo(session, key, JobRequest.model_validate(job.spec))
    if transition(session, job.id, Status.RUNNING, expect=Status.FAILED, message="Publishing to the hub again",
                  stage=Stage.PUBLISHING.value, error=None, finished_at=None, lease_owner=None,
                  lease_expires_at=None, key_id=key.id):
        ring(session, PUBLISH, job.id)
        return
    raise changing_state(job)
