from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hubtune.models.base import Base, JSONType, now


class Job(Base):
    """A fine-tuning job. The row is the source of truth; Celery messages only ring its doorbell."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_owner_id", "owner", "id"),
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_model_id", "model", "id"),  # migration 0003_dashboard
        Index("ix_jobs_finished_at", "finished_at"),
        # Claiming the next job of a queue: highest priority first, then oldest (migration 0005).
        Index("ix_jobs_status_queue_priority", "status", "queue", "priority", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    # The API key that created the job (migration 0006): publish re-checks that key's current hub
    # namespace grants (hubtune.namespaces). None for jobs created before keys were recorded.
    key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(24))
    stage: Mapped[str | None] = mapped_column(String(24), nullable=True)

    model: Mapped[str] = mapped_column(String(256))
    model_revision: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A file id, or a hub dataset file (hf://datasets/org/name@revision/path), pinned to a commit by prepare.
    training_file: Mapped[str] = mapped_column(String(512))
    validation_file: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # Hub dataset files as pinned by prepare: {param: {"ref", "repo_id", "revision", "commit", "path"}}.
    dataset_revisions: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # Completion notifications go here (signed, Standard Webhooks); kept on the row for the notifier.
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    # The request as accepted (method, task, tuning, training, hub), echoed back by the API.
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # "auto" values resolved by prepare, recorded so the run is reproducible.
    hyperparameters: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    data_report: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)

    queue: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Higher runs first among the queued jobs of a queue (migration 0005).
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A job whose `model` names an earlier job or checkpoint (hubtune.lineage): the parent, the base it
    # trains on at its commit, the parent's tuning (migration 0007). None for a plain base model.
    lineage: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    hub_repo: Mapped[str | None] = mapped_column(String(128), nullable=True)
    hub_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    artifact_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    estimated_finish: Mapped[float | None] = mapped_column(Float, nullable=True)

    # The lease: who runs the job, a fencing token that grows with every claim, and its expiry.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    level: Mapped[str] = mapped_column(String(8), default="info")
    # "message" for lifecycle and log lines, "metrics" for training metrics.
    type: Mapped[str] = mapped_column(String(16), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (Index("ix_checkpoints_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
