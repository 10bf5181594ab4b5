"""API schemas (the OpenAI object shapes plus hubtune's extras), separate from the database models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_serializer

from hubtune.lifecycle import WARN
from hubtune.lineage import CHECKPOINT_PREFIX, checkpoint_name
from hubtune.models import Checkpoint, File, Job, JobEvent

HYPERPARAMETER_NAMES = ("n_epochs", "batch_size", "learning_rate_multiplier")


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


# --- files ------------------------------------------------------------------------------------------


class FilePublic(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    status_details: str | None = None

    @classmethod
    def of(cls, row: File) -> FilePublic:
        return cls(
            id=row.id, bytes=row.bytes, created_at=int(row.created_at), filename=row.filename,
            purpose=row.purpose, status=row.status,
        )


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FilePublic]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


# --- jobs -------------------------------------------------------------------------------------------


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class Hyperparameters(BaseModel):
    n_epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate_multiplier: float | Literal["auto"] = "auto"


class Supervised(BaseModel):
    hyperparameters: Hyperparameters


class DpoHyperparameters(Hyperparameters):
    beta: float | Literal["auto"] = "auto"


class Dpo(BaseModel):
    hyperparameters: DpoHyperparameters


class Method(BaseModel):
    """OpenAI's shape: the type, and the hyperparameters under that type's name (the other left out)."""

    type: Literal["supervised", "dpo"] = "supervised"
    supervised: Supervised | None = None
    dpo: Dpo | None = None

    @model_serializer(mode="wrap")
    def _without_other_types(self, handler):
        # OpenAI's job object names only its own method's key: no "dpo": null on a supervised job.
        return {k: v for k, v in handler(self).items() if v is not None}

    @classmethod
    def of(cls, spec: dict[str, Any], hyper: Hyperparameters, resolved: dict[str, Any]) -> Method:
        method = spec.get("method") or {}
        if method.get("type") != "dpo":
            return cls(supervised=Supervised(hyperparameters=hyper))
        requested = (method.get("dpo") or {}).get("hyperparameters") or {}
        beta = resolved.get("beta", requested.get("beta", "auto"))
        return cls(type="dpo", dpo=Dpo(hyperparameters=DpoHyperparameters(**hyper.model_dump(), beta=beta)))


class JobPublic(BaseModel):
    """OpenAI's `fine_tuning.job`, plus hubtune's own fields (task, tuning, training, hub, stage, ...)."""

    model_config = ConfigDict(protected_namespaces=())

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None
    model: str
    fine_tuned_model: str | None
    organization_id: str
    result_files: list[str] = []
    status: str
    validation_file: str | None
    training_file: str
    hyperparameters: Hyperparameters
    trained_tokens: int | None
    error: JobError | None
    seed: int
    estimated_finish: int | None
    integrations: list[Any] = []
    metadata: dict[str, str] | None
    method: Method
    suffix: str | None
    user_provided_suffix: str | None
    # hubtune's own
    task: str | None
    tuning: dict[str, Any] | None
    training: dict[str, Any] | None
    hub: dict[str, Any] | None
    stage: str | None
    queue: str | None
    model_revision: str | None
    data_report: dict[str, Any] | None
    result: dict[str, Any] | None
    attempts: int
    max_attempts: int
    priority: int = 0
    # The earlier job or checkpoint this one continues, and the base it trains on (hubtune.lineage).
    lineage: dict[str, Any] | None = None

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        spec = job.spec or {}
        hyper = Hyperparameters(**_hyperparameters(job, spec))
        error = None
        if job.error:
            error = JobError(
                code=str(job.error.get("code") or "error"),
                message=str(job.error.get("message") or "The job failed."),
                param=job.error.get("param"),
            )
        return cls(
            id=job.id,
            created_at=int(job.created_at),
            finished_at=_ts(job.finished_at),
            model=job.model,
            fine_tuned_model=job.fine_tuned_model,
            organization_id=job.owner,
            status=job.status,
            validation_file=job.validation_file,
            training_file=job.training_file,
            hyperparameters=hyper,
            trained_tokens=job.trained_tokens,
            error=error,
            seed=job.seed,
            estimated_finish=_ts(job.estimated_finish),
            metadata=spec.get("metadata"),
            # As OpenAI shows them: the type and its own settings, not the other types' empty slots.
            integrations=[{k: v for k, v in item.items() if v is not None} for item in spec.get("integrations") or []],
            method=Method.of(spec, hyper, job.hyperparameters or {}),
            suffix=job.suffix,
            user_provided_suffix=job.suffix,
            task=spec.get("task"),
            tuning=spec.get("tuning"),
            training=spec.get("training"),
            hub=spec.get("hub"),
            stage=job.stage,
            queue=job.queue,
            model_revision=job.model_revision,
            data_report=job.data_report,
            result=job.result,
            attempts=job.attempts or 0,
            max_attempts=job.max_attempts,
            priority=job.priority or 0,
            lineage=public_lineage(job.lineage),
        )


def public_lineage(lineage: dict[str, Any] | None) -> dict[str, Any] | None:
    """The lineage without the storage path of the parent's weights (a server-side detail)."""
    if not lineage:
        return None
    parent = {k: v for k, v in lineage["parent"].items() if k != "ref"}
    return {"parent": parent, "kind": lineage.get("kind"), "base_model": lineage.get("base_model"),
            "base_revision": lineage.get("base_revision"), "root": lineage.get("root"),
            "ancestors": lineage.get("ancestors", [])}


def _requested_hyperparameters(spec: dict[str, Any]) -> dict[str, Any]:
    method = spec.get("method") or {}
    chosen = method.get(method.get("type") or "supervised") or {}
    return chosen.get("hyperparameters") or spec.get("hyperparameters") or {}


def _hyperparameters(job: Job, spec: dict[str, Any]) -> dict[str, Any]:
    """The resolved values once prepare recorded them, else what was requested ("auto" by default)."""
    requested = _requested_hyperparameters(spec)
    resolved = job.hyperparameters or {}
    out: dict[str, Any] = {}
    for name in HYPERPARAMETER_NAMES:
        value = resolved.get(name, requested.get(name, "auto"))
        out[name] = "auto" if value is None else value
    return out


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobPublic]
    has_more: bool


# --- events and checkpoints -------------------------------------------------------------------------

EVENT_PREFIX = "ftevent-"


def public_level(level: str) -> str:
    """One spelling in answers: rows written before the levels were unified may say "warning"."""
    return WARN if level == "warning" else level


class EventPublic(BaseModel):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None

    @classmethod
    def of(cls, row: JobEvent) -> EventPublic:
        return cls(
            id=f"{EVENT_PREFIX}{row.id}", created_at=int(row.created_at), level=public_level(row.level),
            message=row.message, type=row.type, data=row.data,
        )


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EventPublic]
    has_more: bool


class MetricsPoint(BaseModel):
    """One logged step of a job: its id is the step's event id (a cursor for `after`)."""

    object: Literal["fine_tuning.job.metrics"] = "fine_tuning.job.metrics"
    id: str
    created_at: int
    step: int
    data: dict[str, Any]

    @classmethod
    def of(cls, row: JobEvent) -> MetricsPoint:
        data = row.data or {}
        return cls(id=f"{EVENT_PREFIX}{row.id}", created_at=int(row.created_at), step=int(data.get("step") or 0),
                   data=data)


class MetricsSeries(BaseModel):
    object: Literal["list"] = "list"
    data: list[MetricsPoint]
    has_more: bool


class CheckpointPublic(BaseModel):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int

    @classmethod
    def of(cls, row: Checkpoint, job: Job) -> CheckpointPublic:
        metrics = dict(row.metrics or {})
        metrics.setdefault("step", row.step)
        return cls(
            id=f"{CHECKPOINT_PREFIX}{row.id}",
            created_at=int(row.created_at),
            fine_tuned_model_checkpoint=checkpoint_name(job, row.step),
            fine_tuning_job_id=job.id,
            metrics=metrics,
            step_number=row.step,
        )


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointPublic]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"
