"""POST /v1/fine_tuning/jobs/estimate: the memory a job request would need, and where it would run.

The body is the job request of `POST /v1/fine_tuning/jobs`; training_file may be left out. The model is
resolved on the hub as the key's owner sees it (their stored hub credential, else the server's token, through
which another owner's private repo answers exactly as a missing one: hubtune.namespaces) and only its
config.json is read (hubtune.estimator), then the live workers are matched (hubtune.routing).
Without the data, batch_size "auto" is estimated at hubtune.estimator.DEFAULT_AUTO_BATCH_SIZE (the
largest the worker's auto rule picks), the task defaults to causal_lm for decoders and
sequence_classification for encoders, with 2 labels, and sequences are max_seq_length tokens long.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from hubtune.estimator import EstimateError, request_batch_size
from hubtune.models import ApiKey
from hubtune.namespaces import Rights, may_see, owner_hub_token
from hubtune.routing import route_request
from hubtune.settings import Settings
from hubtune.spec import JobRequest
from plugin import Hub, VisibleOnly, make_hub
from plugin.base import EntryNotFound
from plugin.errors import HubError, HubUnavailable, RepoNotFound, RevisionNotFound
from server import crud
from server.deps import CurrentKey, SessionDep, SettingsDep
from server.errors import ApiError, bad_request
from server.repo_ids import InvalidModelRef, check_model_ref

router = APIRouter(prefix="/fine_tuning/jobs", tags=["fine-tuning"])


class EstimateRequest(JobRequest):
    training_file: str | None = Field(default=None, min_length=1, max_length=512)  # type: ignore[assignment]


class Parts(BaseModel):
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    overhead_bytes: int


class Params(BaseModel):
    total: int
    trainable: int


class Estimate(BaseModel):
    object: str = "fine_tuning.estimate"
    model: str
    model_revision: str
    task: str
    batch_size: int
    seq_len: int
    parts: Parts
    total_bytes: int
    params: Params
    precision: str
    queue: str | None
    fits: bool
    reason: str
    suggestions: list[dict[str, Any]]


@router.post("/estimate", response_model=Estimate)
def estimate_job(session: SessionDep, key: CurrentKey, settings: SettingsDep, body: EstimateRequest) -> Estimate:
    for param in ("training_file", "validation_file"):
        if getattr(body, param) is not None:
            crud._check_file(session, key, getattr(body, param), param)
    try:
        repo_id, revision = check_model_ref(body.model)
    except InvalidModelRef as exc:
        raise bad_request(f"Invalid model '{body.model}': {exc}", param="model", code="invalid_model") from None
    hub = hub_for_key(session, settings, key)
    sha, config = _model_config(hub, body.model, repo_id, revision)
    request = JobRequest.model_validate({**body.model_dump(), "training_file": body.training_file or "-"})
    try:
        route = route_request(session, request=request, config=config, heartbeat_seconds=settings.heartbeat_seconds,
                              batch_size=request_batch_size(request))
    except EstimateError as exc:
        raise bad_request(f"Cannot estimate this job: {exc}", param=exc.param, code=exc.code) from None
    est = route.estimate
    return Estimate(
        model=body.model, model_revision=sha, task=est.task, batch_size=est.batch_size, seq_len=est.seq_len,
        parts=Parts(**est.parts()), total_bytes=est.total_bytes,
        params=Params(total=est.params_total, trainable=est.params_trainable), precision=est.precision,
        queue=route.queue, fits=route.fits, reason=route.reason,
        suggestions=[s.as_dict() for s in route.suggestions],
    )


def _model_config(hub: Hub, ref: str, repo_id: str, revision: str | None) -> tuple[str, dict[str, Any]]:
    try:
        sha = hub.resolve(repo_id, revision=revision)
        raw = hub.read_file(repo_id, path="config.json", revision=sha)
    except (RepoNotFound, RevisionNotFound) as exc:
        raise bad_request(f"Model '{ref}' was not found on the hub: {exc}", param="model", code="model_not_found") from None
    except EntryNotFound:
        raise bad_request(f"Model '{ref}' has no config.json to estimate from.", param="model",
                          code="model_config_not_found") from None
    except HubUnavailable as exc:
        raise ApiError(503, f"The hub could not be reached: {exc}", code=exc.code, type="server_error") from None
    except HubError as exc:
        raise bad_request(f"Model '{ref}': {exc}", param="model", code=exc.code) from None
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"Model '{ref}' has a config.json that is not JSON: {exc}", param="model",
                          code="invalid_model_config") from None
    if not isinstance(config, dict):
        raise bad_request(f"Model '{ref}' has a config.json that is not a JSON object.", param="model",
                          code="invalid_model_config")
    return sha, config


def hub_for_key(session: Session, settings: Settings, key: ApiKey) -> Hub:
    """The hub as the key's owner sees it, as the worker builds it (worker/hub.py, which the server may not
    import): their newest stored credential, else the server's token showing only what the key may see."""
    token = owner_hub_token(session, settings, key.owner)
    hub = make_hub(backend=settings.hub_backend, hub_dir=settings.resolved_hub_dir, endpoint=settings.hub_endpoint,
                   token=token or (settings.hub_token.get_secret_value() if settings.hub_token else None),
                   cache_dir=settings.hub_cache_dir)
    if token is not None:
        return hub  # the owner's own token: the hub decides what they see
    rights = Rights.of(key)
    return VisibleOnly(hub, may_see=lambda repo_id, private: may_see(rights, repo_id, private=private))
