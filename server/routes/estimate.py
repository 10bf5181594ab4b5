"""POST /v1/fine_tuning/jobs/estimate: the memory a job request would need, and where it would run.

The body is the job request of `POST /v1/fine_tuning/jobs`; training_file may be left out (and is only
checked, never read). The model is resolved on the hub as the key's owner sees it (server/hub_models.py, as
job creation does; another owner's private repo answers exactly as a missing one) and only its config.json is read. The figure is
hubtune.estimator.estimate_request's, computed from the body alone, and prepare routes the job by the
same figure, so that the same body gets the same answer here and at prepare: batch_size "auto" counts
as the largest batch the auto rule picks (16), every sequence as max_seq_length tokens, and a
classification head as 2 labels. It is an upper bound for the batch and sequence length (lower
max_seq_length to the data's longest example, shown in prepare's data report, for a tighter one).
A request without `task` is estimated here for the model family's usual task (causal_lm for
decoders, sequence_classification for encoders) while prepare takes the data's: give `task` when
training a decoder for classification. Then the live workers are matched (hubtune.routing).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hubtune.estimator import EstimateError
from hubtune.routing import route_request
from hubtune.lineage import resolve_parent
from hubtune.spec import JobRequest
from server import crud
from server.deps import CurrentKey, SessionDep, SettingsDep
from server.errors import bad_request
from server.hub_models import hub_for_key, model_config

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
            crud.check_file(session, key, getattr(body, param), param)
    fields = {**body.model_dump(), "training_file": body.training_file or "-"}
    model_ref = body.model
    if (lineage := resolve_parent(session, key, body.model)) is not None:  # an earlier job or checkpoint
        if not lineage.get("base_model"):
            raise bad_request(f"Cannot estimate a job continuing '{body.model}': it starts from weights that "
                              "were never published; estimate its first base model instead.", param="model",
                              code="invalid_model")
        model_ref = f"{lineage['base_model']}@{lineage['base_revision']}"
        if lineage["kind"] == "adapter":  # the child trains the parent's adapter (worker/lineage.py)
            fields["tuning"] = lineage["tuning"]
    sha, config = model_config(hub_for_key(session, settings, key), model_ref)
    request = JobRequest.model_validate(fields)
    try:
        route = route_request(session, request=request, config=config, heartbeat_seconds=settings.heartbeat_seconds)
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
