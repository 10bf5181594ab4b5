from __future__ import annotations

from typing import Any

from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from hubtune.models.base import Base, JSONType, now


class WorkerRecord(Base):
    """A worker process as it registered itself: where it runs, what it has, which queues it serves."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column()
    queues: Mapped[list[str]] = mapped_column(JSONType)
    # {"gpus": [{"name", "memory_bytes"}], "cpu_count", "ram_bytes"}
    resources: Mapped[dict[str, Any]] = mapped_column(JSONType)
    current_job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    started_at: Mapped[float] = mapped_column(Float, default=now)
    last_heartbeat: Mapped[float] = mapped_column(Float, default=now)
