"""prepare: validate the files, resolve the base model on the hub, resolve "auto" hyperparameters,
pick the training queue, then queued + ring the train doorbell (after commit)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hubtune.db import session_scope
from hubtune.errors import JobError
from hubtune.lifecycle import Stage, Status, add_event, transition
from hubtune.models import File, Job, now
from hubtune.namespaces import may_see, rights_for
from hubtune.queue import DEFAULT_TRAIN_QUEUE, TRAIN, ring
from hubtune.settings import Settings
from hubtune.spec import JobRequest
from hubtune.storage import Storage, StorageUnavailable, open_storage
from plugin import VisibleOnly, is_dataset_ref, parse_dataset_ref, split_model_ref
from plugin.errors import HubError, RepoNotFound, RevisionNotFound
from worker.failures import job_error
from worker.hub import owner_hub
from worker.lineage import continued_request, hub_adapter_lineage, start

log = logging.getLogger(__name__)


class PrepareError(JobError):
    """A job prepare refuses (a file, model or dataset it cannot use, no worker that fits)."""


def run_prepare(job_id: str, settings: Settings) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != Status.VALIDATING_FILES.value:
            return
        request = JobRequest.model_validate(job.spec)
        lineage = job.lineage
        storage = open_storage(settings)
        live = _live_files(session, job)
        owner = job.owner
        rights = rights_for(session, key_id=job.key_id, owner=owner)
        job.stage = Stage.PREPARING.value
        # Progress the sweeper can see: it re-rings prepare only for jobs untouched this long. A duplicate
        # prepare is harmless anyway: the move to queued below is guarded, so only one of them rings train.
        job.updated_at = now()
    try:
        files = {param: (file_id, storage.local_file(file_id) if alive else None)
                 for param, (file_id, alive) in live.items()}
        hub, server_access = owner_hub(settings, owner)
        if server_access:  # another owner's private repo must look missing (hubtune.namespaces)
            hub = VisibleOnly(hub, may_see=lambda repo_id, private: may_see(rights, repo_id, private=private))
        pinned = _pull_datasets(hub, storage, files)
        outcome = _prepare(job_id, request, files, hub, settings, lineage=lineage, storage=storage)
        outcome.update(pinned)
    except StorageUnavailable as exc:
        # Not the job's fault: it stays validating_files and the sweeper rings prepare again later.
        log.warning("prepare %s: %s; the sweeper will retry", job_id, exc)
        with session_scope() as session:
            add_event(session, job_id, f"Artifact storage is unreachable; validation will be retried ({exc})",
                      level="warn")
        return
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
            # "warn", OpenAI's spelling for a job event's level (the dashboard styles it): a data report
            # with warnings (a tiny evaluation split, mixed label spellings) must stand out in the log.
            add_event(session, job_id, _report_message(report), type="message", data={"data_report": report},
                      level="warn" if report.get("warnings") else "info")
            ring(session, TRAIN, job_id, queue=outcome["queue"])


def _live_files(session, job: Job) -> dict[str, tuple[str, bool]]:
    """param -> (file id, whether to read it): not when it was deleted since the job was created, nor
    a hub dataset (pulled and pinned by _pull_datasets)."""
    live = {}
    for param, file_id in (("training_file", job.training_file), ("validation_file", job.validation_file)):
        if file_id is None:
            continue
        if is_dataset_ref(file_id):
            live[param] = (file_id, False)
            continue
        row = session.execute(select(File).where(File.id == file_id)).scalar_one_or_none()
        live[param] = (file_id, row is not None and row.deleted_at is None)
    return live


def _prepare(job_id: str, request: JobRequest, files: dict[str, tuple[str, Path | None]], hub,
             settings: Settings, *, lineage: dict[str, Any] | None = None,
             storage: Storage | None = None) -> dict[str, Any]:
    from worker.engine.data import check_method, check_validation, load_examples
    from worker.engine.data_report import data_report
    from worker.engine.evaluate import split_record
    from worker.engine.verdict import split_warnings
    from worker.engine.hparams import model_parameters, resolve_dpo_hyperparameters, resolve_hyperparameters
    from worker.engine.options import check_training_options
    from worker.engine.tokenizers import cached_tokenizer

    for param, (file_id, path) in files.items():
        if path is None:
            raise PrepareError("file_not_found", f"{param} {file_id} was deleted", param)
    if lineage is not None:  # the parent's tuning and task (worker/lineage.py)
        request = continued_request(request, lineage)
    train = load_examples(files["training_file"][1], task=request.task, param="training_file")
    check_method(train, method=request.method_type, param="training_file")
    if "validation_file" in files:
        valid = load_examples(files["validation_file"][1], task=train.task, param="validation_file")
        check_method(valid, method=request.method_type, param="validation_file")
        check_validation(train, valid)
    model_dir, revision, lineage = _start_model(request, lineage, hub, storage, settings)
    if lineage is not None:
        request = continued_request(request.model_copy(update={"task": train.task}), lineage)
    _check_method(request, task=train.task)
    check_training_options(request.training, task=train.task, labels=train.labels)
    tokenizer = cached_tokenizer(model_dir, revision=revision)  # read-only here: kept warm per commit
    report = data_report(train, tokenizer=tokenizer, max_seq_length=request.training.max_seq_length)
    # Without a validation file the trainer evaluates on a seeded held-out split: record which lines.
    split = split_record(train, valid if "validation_file" in files else None,
                         fraction=request.training.validation_split, seed=request.seed or 0)
    report["evaluation_split"] = split
    report["warnings"] += split_warnings(split, valid if "validation_file" in files else None)
    hyper = resolve_hyperparameters(
        n_examples=len(train.rows) - (split["examples"] if split["source"] == "held_out" else 0), task=train.task, tuning_type=request.tuning.type,
        requested=request.effective_hyperparameters(), training=request.training,
        n_params=model_parameters(model_dir, task=train.task),
    )
    if request.method_type == "dpo":
        hyper = resolve_dpo_hyperparameters(hyper, request.effective_hyperparameters(), request.training)
    spec = request.model_dump(mode="json")
    spec["task"] = train.task
    return {
        "spec": spec, "model_revision": revision, "lineage": lineage, "hyperparameters": hyper, "data_report": report,
        "queue": _route(job_id, request, model_dir=model_dir, train=train, settings=settings), "stage": None,
    }


def _check_method(request: JobRequest, *, task: str) -> None:
    """A request its tuning method refuses fails the job now (MethodError names the field). Only what
    holds on any machine: prepare may run on a CPU worker while the job trains on a GPU one, so the
    device is for routing and for the training worker to check (worker/train.py)."""
    from worker.engine.methods import get_method

    get_method(request.tuning.type).check(request.tuning, task=task, device=None)


def _start_model(request: JobRequest, lineage: dict[str, Any] | None, hub, storage: Storage | None,
                 settings: Settings) -> tuple[Path, str | None, dict[str, Any] | None]:
    """(base model folder, its commit, the job's lineage). A job continuing one of the owner's jobs or
    checkpoints starts from that parent (worker/lineage.py); a hub repo holding an adapter is a parent
    too, found here, with the base its adapter_config.json names."""
    if lineage is None:
        model_dir, revision = _pull_model(request.model, hub, settings)
        lineage = hub_adapter_lineage(split_model_ref(request.model)[0], revision, model_dir)
        if lineage is None:
            return model_dir, revision, None
        # The adapter's config may name a branch (or no revision): the job pins the base to a commit.
        _, lineage["base_revision"] = _pull_model(f"{lineage['base_model']}@{lineage['base_revision']}", hub,
                                                  settings)
    try:
        begin = start(lineage, storage, hub)
    except HubError as exc:
        raise PrepareError("model_not_found", f"the base model of '{request.model}' could not be read from "
                           f"the hub: {exc}", "model")
    _check_safetensors(begin.model_dir, request.model)
    if lineage.get("base_model") and not lineage.get("weights"):
        _check_remote_code(begin.model_dir, lineage["base_model"], settings)
    return begin.model_dir, begin.revision, lineage


def _pull_model(model_ref: str, hub, settings: Settings) -> tuple[Path, str]:
    repo_id, revision = split_model_ref(model_ref)
    try:
        sha = hub.resolve(repo_id, revision=revision)
    except (RepoNotFound, RevisionNotFound) as exc:
        raise PrepareError("model_not_found", f"model {model_ref!r} was not found on the hub: {exc}", "model")
    try:
        folder = hub.snapshot(repo_id, revision=sha)
    except HubError as exc:
        raise PrepareError(exc.code, f"could not download model {model_ref!r}: {exc}", "model")
    _check_safetensors(folder, model_ref)
    _check_remote_code(folder, repo_id, settings)
    return folder, sha


def _check_safetensors(folder: Path, model_ref: str) -> None:
    """Weights load from safetensors only: pickled weights (.bin, .pt) can run code when loaded."""
    if any(folder.rglob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickles:
        raise PrepareError("unsafe_weights", f"model {model_ref!r} has no safetensors weights, only "
                           f"{', '.join(pickles[:3])}; hubtune loads safetensors only", "model")


def _check_remote_code(folder: Path, repo_id: str, settings: Settings) -> None:
    """A model that needs its own Python code (config auto_map) runs only when the server allows its repo."""
    import json

    config = folder / "config.json"
    try:
        needs_code = bool(json.loads(config.read_text()).get("auto_map")) if config.is_file() else False
    except (ValueError, OSError):
        needs_code = False
    if needs_code and not settings.trusts_remote_code(repo_id):
        raise PrepareError("remote_code_not_allowed", f"model '{repo_id}' needs custom code (trust_remote_code), "
                           "which this server allows only for the repos in HUBTUNE_TRUST_REMOTE_CODE_REPOS", "model")


def _pull_datasets(hub, storage: Storage, files: dict[str, tuple[str, Path | None]]) -> dict[str, Any]:
    """Download every hub dataset file at a commit, copy it into storage under its pinned reference
    (hf://datasets/org/name@<commit>/path), and point `files` at it. Returns the job fields to set."""
    fields: dict[str, Any] = {}
    revisions: dict[str, Any] = {}
    for param, (ref, _) in list(files.items()):
        if not is_dataset_ref(ref):
            continue
        pinned, path, record = _pull_dataset(hub, storage, ref, param)
        files[param] = (str(pinned), path)
        fields[param] = str(pinned)  # the job row names the exact commit from now on; train reads this file
        revisions[param] = record
    if revisions:
        fields["dataset_revisions"] = revisions
    return fields


def _pull_dataset(hub, storage: Storage, ref: str, param: str):
    try:
        target = parse_dataset_ref(ref)
    except HubError as exc:
        raise PrepareError("invalid_dataset", str(exc), param)
    try:
        commit = hub.resolve(target.repo_id, revision=target.revision, repo_type="dataset")
        folder = hub.snapshot(target.repo_id, revision=commit, repo_type="dataset")
    except (RepoNotFound, RevisionNotFound) as exc:
        raise PrepareError("dataset_not_found", f"{param} {ref!r} was not found on the hub: {exc}", param)
    except HubError as exc:
        raise PrepareError(exc.code, f"could not download {param} {ref!r}: {exc}", param)
    source = folder / target.path
    if not source.is_file():
        raise PrepareError("file_not_found", f"{param} {ref!r}: no file '{target.path}' in dataset "
                           f"'{target.repo_id}' at commit {commit}", param)
    pinned = target.pinned(commit)
    storage.put_file(str(pinned), source)  # same commit, same bytes: a copy made by an earlier job is reused
    dest = storage.local_file(str(pinned))
    record = {"ref": ref, "repo_id": target.repo_id, "revision": target.revision, "commit": commit,
              "path": target.path}
    return pinned, dest, record


def _route(job_id: str, request: JobRequest, *, model_dir: Path, train, settings: Settings) -> str:
    """The training queue whose live workers fit the job's memory estimate (hubtune.routing); a job
    that no live worker fits fails with what would fit. The choice and why become an event."""
    import json

    from hubtune.estimator import EstimateError
    from hubtune.routing import route_request

    try:
        config = json.loads((model_dir / "config.json").read_text())
        with session_scope() as session:
            # The estimate endpoint's figure for this body (hubtune.estimator.estimate_request): the one
            # fact added from the data is the task, when the request leaves it to the columns.
            route = route_request(
                session, request=request, config=config, heartbeat_seconds=settings.heartbeat_seconds,
                task=train.task,
            )
    except (EstimateError, OSError, ValueError) as exc:
        with session_scope() as session:
            add_event(session, job_id, f"Memory not estimated ({exc}); queued on '{DEFAULT_TRAIN_QUEUE}'",
                      level="warn", data={"queue": DEFAULT_TRAIN_QUEUE})
        return DEFAULT_TRAIN_QUEUE
    if route.queue is None:
        raise PrepareError("no_worker_fits", route.reason[0].upper() + route.reason[1:], route.param)
    data = {"queue": route.queue, "reason": route.reason, "estimate": route.estimate.model_dump() if route.estimate else None}
    with session_scope() as session:
        add_event(session, job_id, f"Routed to queue '{route.queue}': {route.reason}",
                  level="warn" if route.fallback else "info", data=data)
    return route.queue


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
