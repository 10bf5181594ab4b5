"""Holding a job's lease while it trains: a heartbeat thread and writes that go through the fence."""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import select

from hubtune.db import session_scope
from hubtune.lifecycle import LeaseLost, Status, fenced_event, fenced_update, heartbeat
from hubtune.models import Job

log = logging.getLogger(__name__)


class Lease:
    """A claimed job: `lost` turns true once the row says the job is no longer ours to run."""

    def __init__(self, job_id: str, token: int, *, lease_seconds: float, heartbeat_seconds: float) -> None:
        self.job_id, self.token = job_id, token
        self.lease_seconds, self.heartbeat_seconds = lease_seconds, heartbeat_seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                with session_scope() as session:
                    heartbeat(session, self.job_id, token=self.token, lease_seconds=self.lease_seconds)
            except LeaseLost:
                self.lost.set()
                return
            except Exception:  # a database blip: keep beating, the lease has slack
                log.exception("heartbeat for %s failed", self.job_id)

    def still_ours(self) -> bool:
        if self.lost.is_set():
            return False
        with session_scope() as session:
            row = session.execute(select(Job.status, Job.lease_token).where(Job.id == self.job_id)).one_or_none()
        ours = row is not None and row.status == Status.RUNNING.value and row.lease_token == self.token
        if not ours:
            self.lost.set()
        return ours

    def write(self, message: str, *, type: str = "message", data: dict[str, Any] | None = None, **fields: Any) -> None:
        with session_scope() as session:
            fenced_event(session, self.job_id, token=self.token, message=message, type=type, data=data, **fields)

    def update(self, **fields: Any) -> None:
        with session_scope() as session:
            fenced_update(session, self.job_id, token=self.token, **fields)
