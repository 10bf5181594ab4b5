"""train: claim the queued job with a lease, train, keep the artifact, then hand over to publish."""

from __future__ import annotations

import logging
import os
import shutil
import socket

from sqlalchemy import select

from hubtune.db import session_scope
from hubtune.lifecycle import LeaseLost, Stage, Status, claim_next, hand_over, put_back, release_stopped, transition
from hubtune.models import Job
from hubtune.queue import DEFAULT_TRAIN_QUEUE, PUBLISH, TRAIN, ring
from hubtune.settings import Settings
from hubtune.spec import JobRequest
from hubtune.storage import StorageUnavailable, open_storage
from plugin import split_model_ref
from worker.disk import disk_full, hand_on, short_of_space
from worker.failures import job_error
from worker.hub import hub_for_owner
from worker.hooks import JobHooks
from worker.lease import Lease
from worker.lineage import parent_name, start
from worker.registry import set_current_job
from worker.tracking import tracked

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_train(hint_job_id: str, settings: Settings) -> None:
    """The doorbell names a job, but only as a hint that its queue has work: claim the best queued job
    of that queue (priority, age, owners' running limits). A duplicate doorbell then claims nothing."""
    if short_of_space(settings):  # taken before the guard (worker/disk_guard.py) saw it: for another worker
        log.warning("data dir has under %s bytes free; taking no job", settings.min_free_disk_bytes)
        hand_on(TRAIN, hint_job_id)
        return
    with session_scope() as session:
        queue = session.execute(select(Job.queue).where(Job.id == hint_job_id)).scalar_one_or_none()
        claimed = claim_next(session, queue or DEFAULT_TRAIN_QUEUE, owner=worker_name(),
                             lease_seconds=settings.lease_seconds,
                             max_running_per_owner=settings.max_running_jobs_per_owner)
    if claimed is None:
        return  # nothing runnable: done, cancelled, running elsewhere, or its owner is at the limit
    job_id, token = claimed
    set_current_job(job_id)
    try:
        with Lease(job_id, token, lease_seconds=settings.lease_seconds,
                   heartbeat_seconds=settings.heartbeat_seconds) as lease:
            _train_and_hand_over(job_id, lease, settings)
    except LeaseLost:
        log.info("job %s: lease lost (cancelled or taken over); stopping", job_id)
    except StorageUnavailable as exc:
        log.warning("job %s: %s; put back in the queue", job_id, exc)
        with session_scope() as session:
            put_back(session, job_id, token=token,
                     message=f"Artifact storage is unreachable; the job is queued again ({exc})")
    except Exception as exc:
        log.exception("job %s failed in training", job_id)
        with session_scope() as session:
            if disk_full(exc, settings) and _another_attempt(session, job_id, token):
                return
            error = job_error(exc)
            if disk_full(exc, settings):
                error = {"code": "disk_full", "param": None, "message": "every worker that tried this job ran "
                         "out of disk space in its data dir (checkpoints, cache); free space or add disk"}
            transition(session, job_id, Status.FAILED, expect=Status.RUNNING, expect_token=token, level="error",
                       message=f"Training failed: {error['message']}", error=error)
    finally:
        set_current_job(None)


def _another_attempt(session, job_id: str, token: int) -> bool:
    """The worker's disk filled: back to the queue while attempts are left (the attempt counts)."""
    job = session.get(Job, job_id)
    if job.attempts >= job.max_attempts:
        return False
    if not put_back(session, job_id, token=token, refund=False,
                    message=f"Worker {worker_name()} ran out of disk space in its data dir; the job is queued "
                            f"again for another worker (attempt {job.attempts} of {job.max_attempts})"):
        return False
    # Rung at once, unlike an outage's put_back: another machine is likely free now, and this one's
    # guard stops it taking the job (the sweeper would wait requeue_after_seconds, 60 s by default).
    ring(session, TRAIN, job_id, queue=job.queue or DEFAULT_TRAIN_QUEUE)
    return True


def _check_device(request: JobRequest) -> None:
    """What prepare could not check: that this machine can run the tuning method (qlora needs a CUDA
    GPU). A job routed here anyway (no live worker fitted it, so it went to the default queue) fails
    with the method's MethodError, naming tuning.type."""
    import torch

    from worker.engine.methods import get_method

    device = "cuda" if torch.cuda.is_available() else "cpu"
    get_method(request.tuning.type).check(request.tuning, task=request.task, device=device)


def _train_and_hand_over(job_id: str, lease: Lease, settings: Settings) -> None:
    from worker.engine.trainer import TrainPlan, train
    from worker.engine.verdict import BELOW_BASELINE, quality_warnings

    storage = open_storage(settings)
    with session_scope() as session:
        job = session.get(Job, job_id)
        request = JobRequest.model_validate(job.spec)
        hyper, revision, lineage = job.hyperparameters, job.model_revision, job.lineage
        file_ids, seed, owner = (job.training_file, job.validation_file), job.seed, job.owner
    train_file, valid_file = (storage.local_file(f) if f else None for f in file_ids)
    _check_device(request)
    # The owner's hub credential: a private base model is read with the token that can see it.
    hub = hub_for_owner(settings, owner)
    if lineage is None:
        repo_id, _ = split_model_ref(request.model)
        model_dir, init_adapter = hub.snapshot(repo_id, revision=revision), None
    else:  # an earlier job's adapter on its base, or a full fine-tune's weights (worker/lineage.py)
        repo_id = lineage.get("base_model") or ""
        begin = start(lineage, storage, hub)
        model_dir, init_adapter = begin.model_dir, begin.init_adapter
        if init_adapter is not None:
            lease.write(f"Continuing the {request.tuning.type} adapter of {parent_name(lineage)}",
                        data={"lineage": {"parent": {k: v for k, v in lineage["parent"].items() if k != "ref"}}})
    # A paused or interrupted job goes on from its last checkpoint (weights, optimizer, RNG, data position).
    resume_from = storage.latest_checkpoint(job_id, lease.token)
    if resume_from is not None:
        lease.write(f"Resuming from {resume_from.name}", data={"checkpoint": resume_from.name})
    staging = storage.staging_dir(job_id, lease.token)
    plan = TrainPlan(
        task=request.task, model_dir=model_dir, train_file=train_file, valid_file=valid_file,
        output_dir=staging, checkpoints_dir=storage.checkpoints_dir(job_id, lease.token), seed=seed,
        tuning=request.tuning, training=request.training, hyperparameters=hyper, resume_from=resume_from,
        trust_remote_code=bool(repo_id) and settings.trusts_remote_code(repo_id), init_adapter=init_adapter,
        method=request.method_type,
    )
    hooks = tracked(JobHooks(lease, plan, storage), job_id=job_id, request=request, hyperparameters=hyper,
                    seed=seed, lease=lease, artifact_dir=staging, settings=settings)
    with hooks:  # the job's integrations (MLflow, TensorBoard, wandb) see the run and end with it
        result = train(plan, hooks)
    if result.stopped or lease.lost.is_set():
        # Paused, cancelled, or taken over by another worker (this one froze past its lease): the worker
        # is free for the next job, and nothing of this run is published.
        log.warning("job %s: training stopped at step %s (paused, cancelled or taken over)", job_id, result.steps)
        shutil.rmtree(staging, ignore_errors=True)
        with session_scope() as session:
            release_stopped(session, job_id, token=lease.token)  # a paused job may now be resumed
        storage.finished(job_id, lease.token)
        return
    artifact = storage.keep_artifact(job_id, staging, token=lease.token)
    summary = {
        "metrics": result.metrics, "steps": result.steps, "reference": result.reference,
        "trainable_params": result.trainable_params, "total_params": result.total_params,
        # Base vs tuned (and the majority class) on the validation split; the model card renders it.
        "evaluation": result.evaluation,
        "world_size": result.data.get("world_size", 1),
        # Token positions the steps computed, padding included: beside trained_tokens, the padding cost.
        "fed_positions": result.data.get("fed_positions"),
        # The learning-rate search ("auto" rate): what was tried and chosen, or why it did not run.
        "search": result.search,
        # Below its baselines, or evaluated on too few examples: the job still succeeds, flagged (verdict).
        "warnings": quality_warnings(result.evaluation),
    }
    for warning in summary["warnings"]:
        if warning["code"] == BELOW_BASELINE:
            lease.write(warning["message"], level="warn", data={"warning": warning})

    def finish() -> None:
        with session_scope() as session:
            hand_over(
                session, job_id, token=lease.token, stage=Stage.PUBLISHING,
                message="Training finished; publishing to the hub",
                data={"metrics": result.metrics, "steps": result.steps},
                artifact_path=artifact, result=summary, trained_tokens=result.trained_tokens,
            )
            ring(session, PUBLISH, job_id)

    lease.retrying(finish)
    storage.finished(job_id, lease.token)
