"""Continuing from an earlier fine-tune: which of the owner's jobs or checkpoints a job's `model` names.

OpenAI's scripts pass the result of a job, or one of its checkpoints, back as `model`. hubtune accepts:

- `ftckpt-<n>`: a checkpoint object's id (GET /v1/fine_tuning/jobs/{id}/checkpoints);
- `<fine_tuned_model or job id>:ckpt-step-<n>`: its `fine_tuned_model_checkpoint`;
- `ftjob-...`: a succeeded job's id (its trained artifact);
- a job's `fine_tuned_model` (`repo@commit`): that job's artifact, when the job is the key's owner's.
  Any other `org/name[@rev]` is a hub model; prepare finds out whether it holds an adapter
  (worker/lineage.py).

`resolve_parent` answers the job's lineage record (stored on jobs.lineage, echoed by the API, written
on the card): the parent, and the base model the parent was trained on at its revision, so the child
trains the same adapter on the same base. Another owner's jobs and checkpoints answer as missing ones do.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hubtune.errors import JobError
from hubtune.lifecycle import Status
from hubtune.models import ApiKey, Checkpoint, Job

CHECKPOINT_PREFIX = "ftckpt-"
_CHECKPOINT_ID = re.compile(r"ftckpt-(\d{1,18})")
_CHECKPOINT_STEP = re.compile(r"(?P<model>.+):ckpt-step-(?P<step>\d{1,9})")
_JOB_ID = re.compile(r"ftjob-[A-Za-z0-9]+")
# A parent whose own adapter the child goes on training; a full fine-tune is a new base instead.
ADAPTER, FULL = "adapter", "full"


def checkpoint_name(job: Job, step: int) -> str:
    """OpenAI's `fine_tuned_model_checkpoint`: the job's model (its id before it is published) and step."""
    return f"{job.fine_tuned_model or job.id}:ckpt-step-{step}"


def names_parent(model: str) -> bool:
    """Whether `model` is written as a job or checkpoint reference (never a hub model id)."""
    return bool(_CHECKPOINT_ID.fullmatch(model) or _CHECKPOINT_STEP.fullmatch(model) or _JOB_ID.fullmatch(model))


def resolve_parent(session: Session, key: ApiKey, model: str) -> dict[str, Any] | None:
    """The lineage of a job whose `model` names one of the owner's jobs or checkpoints; None for a hub
    model. `model_not_found` (param `model`) when a reference names nothing the key may see."""
    if (m := _CHECKPOINT_ID.fullmatch(model)) is not None:
        row = session.get(Checkpoint, int(m.group(1)))
        job = session.get(Job, row.job_id) if row is not None else None
        return _from_checkpoint(_visible(job, key, model), row)  # _visible: row is not None past it
    if (m := _CHECKPOINT_STEP.fullmatch(model)) is not None:
        job = _visible(_job_named(session, key, m.group("model")), key, model)
        row = session.execute(
            select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.step == int(m.group("step")))
            .order_by(Checkpoint.id.desc()).limit(1)
        ).scalar_one_or_none()
        if row is None:
            raise _not_found(model, f"fine-tuning job {job.id} has no checkpoint at step {m.group('step')}")
        return _from_checkpoint(job, row)
    if _JOB_ID.fullmatch(model):
        return _from_job(_visible(session.get(Job, model), key, model), model)
    job = _job_named(session, key, model)  # a fine_tuned_model of the owner's: its kept artifact
    return _from_job(job, model) if job is not None else None


def _job_named(session: Session, key: ApiKey, name: str) -> Job | None:
    """The owner's job whose id or fine_tuned_model is `name` (an admin key sees every owner's)."""
    stmt = select(Job).where((Job.id == name) | (Job.fine_tuned_model == name))
    if not key.is_admin:
        stmt = stmt.where(Job.owner == key.owner)
    return session.execute(stmt.order_by(Job.created_at.desc()).limit(1)).scalar_one_or_none()


def _visible(job: Job | None, key: ApiKey, model: str) -> Job:
    if job is None or (job.owner != key.owner and not key.is_admin):
        raise _not_found(model, "no such fine-tuning job or checkpoint")
    return job


def _not_found(model: str, why: str) -> JobError:
    return JobError("model_not_found", f"Model '{model}' not found: {why}.", "model")


def _from_checkpoint(job: Job, row: Checkpoint) -> dict[str, Any]:
    parent = {"type": "checkpoint", "job_id": job.id, "checkpoint_id": f"{CHECKPOINT_PREFIX}{row.id}",
              "step": row.step, "fine_tuned_model_checkpoint": checkpoint_name(job, row.step), "ref": row.path}
    return _lineage(job, parent)


def _from_job(job: Job, model: str) -> dict[str, Any]:
    if job.status != Status.SUCCEEDED.value or not job.artifact_path:
        raise JobError("invalid_model", f"Model '{model}': fine-tuning job {job.id} is {job.status}; only a "
                       "succeeded job (or one of its checkpoints) can be trained further.", "model")
    parent = {"type": "job", "job_id": job.id, "fine_tuned_model": job.fine_tuned_model,
              "ref": job.artifact_path}
    return _lineage(job, parent)


def _lineage(job: Job, parent: dict[str, Any]) -> dict[str, Any]:
    """The parent and what the child needs of it. An adapter parent: the child trains that adapter
    further on the parent's own base (the hub model at its commit, or kept full-fine-tune `weights`
    when the base never reached the hub). A full parent is a new base: its kept weights, and its hub
    repo for the card when the job itself (not a checkpoint) is the parent."""
    spec = job.spec or {}
    tuning = spec.get("tuning") or {}
    own = job.lineage or {}
    root = {"base_model": own.get("base_model") or (None if own else job.model),
            "base_revision": own.get("base_revision") if own else job.model_revision,
            "weights": own.get("weights")}
    if tuning.get("type") == "full":
        published = parent["type"] == "job" and job.hub_repo
        base = {"base_model": job.hub_repo if published else None,
                "base_revision": job.hub_commit if published else None, "weights": parent}
        kind = FULL
    else:
        base, kind = root, ADAPTER
    # A parent that itself continued a hub adapter has no job id of its own to add.
    ancestors = [*own.get("ancestors", []), *([own["parent"]["job_id"]] if own.get("parent", {}).get("job_id") else [])]
    return {"parent": parent, "kind": kind, **base, "root": own.get("root") or root["base_model"],
            "task": spec.get("task"), "tuning": tuning, "ancestors": ancestors}
