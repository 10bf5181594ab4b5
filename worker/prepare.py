"""prepare: validate the files, resolve the base model on the hub, resolve "auto" hyperparameters,
pick the training queue, then queued + ring the train doorbell (after commit)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hubtune.db import session_scope
from hubtune.lifecycle import Stage, Status, add_event, transition
from hubtune.models import File, Job
from hubtune.queue import DEFAULT_TRAIN_QUEUE, TRAIN, ring
from hubtune.settings import get_settings
from hubtune.spec import JobRequest
from hubtune.storage import Storage
from plugin import split_model_ref
from plugin.errors import HubError, RepoNotFound, RevisionNotFound
from worker.failures import job_error
from worker.hub import hub_from_settings

log = logging.getLogger(__name__)


class PrepareError(Exception):
    def __init__(self, code: str, message: str, param: str | None) -> None:
        super().__init__(message)
        self.code, self.param = code, param


def run_prepare(job_id: str) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != Status.VALIDATING_FILES.value:
            return
        request = JobRequest.model_validate(job.spec)
        files = _file_paths(session, job)
        job.stage = Stage.PREPARING.value
    try:
        outcome = _prepare(job_id, request, files)
    except Exception as exc:  # any failure here is the job's, never the worker's
        log.warning("prepare %s failed: %s", job_id, exc)
        _fail(job_id, job_error(exc))
        return
    with session_scope() as session:
        queued = transition(
            session, job_id, Status.QUEUED, expect=Status.VALIDATING_FILES,
            message="Files validated; fine-tuning job queued", data={"queue": outcome["queue"]},
            **outcome,
        )
        if queued:
            report = outcome["data_report"]
            add_event(session, job_id, _report_message(report), type="message", data={"data_report": report})
            ring(session, TRAIN, job_id, queue=outcome["queue"])


def _file_paths(session, job: Job) -> dict[str, tuple[str, Path | None]]:
    """param -> (file id, path); the path is None when the file was deleted since the job was created."""
    storage = Storage(get_settings().storage_dir)
    paths = {}
    for param, file_id in (("training_file", job.training_file), ("validation_file", job.validation_file)):
        if file_id is None:
            continue
        row = session.execute(select(File).where(File.id == file_id)).scalar_one_or_none()
        alive = row is not None and row.deleted_at is None
        paths[param] = (file_id, storage.file_path(file_id) if alive else None)
    return paths


def _prepare(job_id: str, request: JobRequest, files: dict[str, tuple[str, Path | None]]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from worker.engine.data import check_validation, data_report, load_examples
    from worker.engine.hparams import resolve_hyperparameters

    for param, (file_id, path) in files.items():
        if path is None:
            raise PrepareError("file_not_found", f"{param} {file_id} was deleted", param)
    train = load_examples(files["training_file"][1], task=request.task, param="training_file")
    if "validation_file" in files:
        valid = load_examples(files["validation_file"][1], task=train.task, param="validation_file")
        check_validation(train, valid)
    model_dir, revision = _pull_model(request.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    report = data_report(train, tokenizer=tokenizer, max_seq_length=request.training.max_seq_length)
    hyper = resolve_hyperparameters(
        n_examples=len(train.rows), task=train.task, tuning_type=request.tuning.type,
        requested=request.effective_hyperparameters(), training=request.training,
    )
    spec = request.model_dump(mode="json")
    spec["task"] = train.task
    return {
        "spec": spec, "model_revision": revision, "hyperparameters": hyper, "data_report": report,
        "queue": DEFAULT_TRAIN_QUEUE, "stage": None,
    }


def _pull_model(model_ref: str) -> tuple[Path, str]:
    repo_id, revision = split_model_ref(model_ref)
    hub = hub_from_settings(get_settings())
    try:
        sha = hub.resolve(repo_id, revision=revision)
    except (RepoNotFound, RevisionNotFound) as exc:
        raise PrepareError("model_not_found", f"model {model_ref!r} was not found on the hub: {exc}", "model")
    try:
        return hub.snapshot(repo_id, revision=sha), sha
    except HubError as exc:
        raise PrepareError(exc.code, f"could not download model {model_ref!r}: {exc}", "model")


def _report_message(report: dict[str, Any]) -> str:
    parts = [f"{report.get('examples')} examples", f"{report.get('tokens')} tokens"]
    if report.get("truncated_examples"):
        parts.append(f"{report['truncated_examples']} truncated")
    text = "Data report: " + ", ".join(parts)
    for warning in report.get("warnings", []):
        text += f"; warning: {warning}"
    return text


def _fail(job_id: str, error: dict[str, Any]) -> None:
    with session_scope() as session:
        transition(
            session, job_id, Status.FAILED, expect=Status.VALIDATING_FILES, level="error",
            message=f"Job failed while preparing: {error['message']}", error=error, stage=None,
        )
