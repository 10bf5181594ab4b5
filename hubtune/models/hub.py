"""Hub plugin rows: per-owner hub credentials (encrypted), webhook triggers, handled hub deliveries,
and completion notifications sent to a job's webhook_url."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hubtune.models.base import Base, JSONType, now


class HubCredential(Base):
    """A hub token for one owner. Only the Fernet ciphertext is stored; the API never returns it."""

    __tablename__ = "hub_credentials"
    __table_args__ = (Index("ix_hub_credentials_owner_id", "owner", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128), default="")
    token_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Trigger(Base):
    """When dataset repo `repo_id` changes (optionally only files matching `path_pattern`), create a job
    from `template` (a job request) with its hub dataset files pinned to the delivery's head commit."""

    __tablename__ = "hub_triggers"
    __table_args__ = (Index("ix_hub_triggers_repo_id", "repo_id"), Index("ix_hub_triggers_owner_id", "owner", "id"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    # The API key that created the trigger (migration 0006): its jobs carry it, so their hub repo is
    # checked against that key's current grants when the trigger fires and again at publish.
    key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    repo_id: Mapped[str] = mapped_column(String(128))
    path_pattern: Mapped[str | None] = mapped_column(String(256), nullable=True)
    template: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class HubDelivery(Base):
    """A (trigger, head commit) already handled: the unique key makes a repeated delivery start nothing."""

    __tablename__ = "hub_deliveries"
    __table_args__ = (UniqueConstraint("trigger_id", "head_sha", name="uq_hub_deliveries_trigger_sha"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trigger_id: Mapped[str] = mapped_column(ForeignKey("hub_triggers.id", ondelete="CASCADE"))
    head_sha: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Notification(Base):
    """One completion event for a job's webhook_url; `id` is the webhook-id, the same on every retry."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_job_id", "job_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
