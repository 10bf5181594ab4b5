"""publish: push the trained artifact to the hub in one commit, with a model card; then succeeded.

The artifact stays in storage whatever happens, so a failed push never costs a retraining.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from hubtune.db import session_scope
from hubtune.lifecycle import Stage, Status, claim_stage, transition
from hubtune.models import Job
from hubtune.settings import get_settings
from hubtune.spec import JobRequest
from plugin import render_model_card, split_model_ref
from worker.failures import job_error
from worker.hub import hub_from_settings
from worker.train import worker_name

log = logging.getLogger(__name__)


def run_publish(job_id: str) -> None:
    settings = get_settings()
    with session_scope() as session:
        token = claim_stage(session, job_id, stage=Stage.PUBLISHING, owner=worker_name(),
                            lease_seconds=settings.lease_seconds)
        if token is None:
            return
        job = session.get(Job, job_id)
        request = JobRequest.model_validate(job.spec)
        snapshot = {"id": job.id, "owner": job.owner, "model_revision": job.model_revision,
                    "hyperparameters": job.hyperparameters, "result": job.result or {},
                    "data_report": job.data_report, "artifact": Path(job.artifact_path)}
    repo_id = target_repo(request, owner=snapshot["owner"], job_id=job_id)
    branch = request.hub.branch if request.hub else "main"
    private = request.hub.private if request.hub else True
    try:
        _write_card(snapshot, request, repo_id)
        commit = hub_from_settings(settings).publish(
            repo_id, folder=snapshot["artifact"], message=f"hubtune fine-tuning job {job_id}",
            branch=branch, private=private,
        )
    except Exception as exc:
        log.warning("publish %s failed: %s", job_id, exc)
        error = job_error(exc)
        error["code"] = error["code"] if error["code"] != "internal_error" else "publish_failed"
        with session_scope() as session:
            transition(session, job_id, Status.FAILED, expect=Status.RUNNING, expect_token=token, level="error",
                       message=f"Publishing to the hub failed (the artifact is kept): {error['message']}",
                       error=error)
        return
    with session_scope() as session:
        transition(
            session, job_id, Status.SUCCEEDED, expect=Status.RUNNING, expect_token=token,
            message=f"Fine-tuning job succeeded; adapter pushed to {repo_id}@{commit}",
            data={"repo_id": repo_id, "commit": commit, "branch": branch},
            fine_tuned_model=f"{repo_id}@{commit}", hub_repo=repo_id, hub_commit=commit, stage=None,
        )


def target_repo(request: JobRequest, *, owner: str, job_id: str) -> str:
    """The request's hub.repo_id, else `<namespace>/<model name>-<suffix or job id>`."""
    if request.hub and request.hub.repo_id:
        return request.hub.repo_id
    namespace = get_settings().hub_namespace or owner
    base = split_model_ref(request.model)[0].split("/")[-1]
    name = f"{base}-{request.suffix or job_id}"
    return f"{_slug(namespace)}/{_slug(name)}"[:96]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "hubtune"


def _write_card(job: dict[str, Any], request: JobRequest, repo_id: str) -> None:
    folder: Path = job["artifact"]
    result = job["result"]
    base_model = split_model_ref(request.model)[0]
    metrics = dict(result.get("metrics") or {})
    (folder / "metrics.json").write_text(json.dumps(
        {"metrics": metrics, "steps": result.get("steps"), "trainable_params": result.get("trainable_params"),
         "total_params": result.get("total_params"), "data_report": job["data_report"]}, indent=2))
    card = render_model_card(
        repo_id=repo_id, base_model=base_model, base_model_revision=job["model_revision"], task=request.task,
        tuning=request.tuning.model_dump(mode="json"), hyperparameters=job["hyperparameters"] or {},
        # Uploaded file names are not hub datasets; the card lists hub dataset ids only.
        datasets=[], metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        tags=["hubtune", request.tuning.type, request.task],
    )
    (folder / "README.md").write_text(card)
    _point_adapter_at_hub(folder, base_model)


def _point_adapter_at_hub(folder: Path, base_model: str) -> None:
    """peft records the local snapshot path it loaded; the pushed adapter must name the hub id."""
    config_path = folder / "adapter_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base_model
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
