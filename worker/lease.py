"""Holding a job's lease while it trains: a heartbeat thread and writes that go through the fence.

A database blip (PostgreSQL restarted, a dropped connection) must not kill a training: writes are
retried, and the lease counts as ours while it was confirmed recently enough that the sweeper cannot
have taken it yet. Past that margin the worker stops on its own: somebody else may own the job now,
and two trainings must never write the same checkpoints.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from hubtune.db import session_scope
from hubtune.lifecycle import LeaseLost, Status, fenced_event, fenced_update, heartbeat
from hubtune.models import Job

log = logging.getLogger(__name__)
T = TypeVar("T")
# Errors that mean "the database is unreachable for now", not "the statement is wrong".
TRANSIENT = (OperationalError, InterfaceError)
RETRY_PAUSE = 0.5


def is_transient(exc: DBAPIError) -> bool:
    """TRANSIENT, or any error that cost the connection. PostgreSQL ends a transaction left idle past the
    lease margin (hubtune/db.py: a worker frozen mid-write), and the woken worker's next statement raises
    InternalError (SQLSTATE 25P03) on an invalidated connection: its write was rolled back, and whether to
    retry it is the lease's question, as after any lost connection."""
    return isinstance(exc, TRANSIENT) or exc.connection_invalidated


class Lease:
    """A claimed job: `lost` turns true once the row says the job is no longer ours to run."""

    def __init__(self, job_id: str, token: int, *, lease_seconds: float, heartbeat_seconds: float) -> None:
        self.job_id, self.token = job_id, token
        self.lease_seconds, self.heartbeat_seconds = lease_seconds, heartbeat_seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._confirmed = time.monotonic()  # when the database last agreed the lease is ours
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
                self._confirmed = time.monotonic()
            except LeaseLost:
                self.lost.set()
                return
            except Exception:  # a database blip: keep beating, the lease has slack
                log.warning("heartbeat for %s failed; retrying", self.job_id, exc_info=True)

    def confirmed_recently(self) -> bool:
        """True while the sweeper cannot yet have re-queued the job: the last confirmation is younger
        than the lease less one heartbeat (the margin for clocks and the sweeper's interval)."""
        margin = max(self.lease_seconds - self.heartbeat_seconds, self.lease_seconds / 2)
        return time.monotonic() - self._confirmed < margin

    def still_ours(self) -> bool:
        if self.lost.is_set():
            return False
        try:
            with session_scope() as session:
                row = session.execute(
                    select(Job.status, Job.lease_token).where(Job.id == self.job_id)).one_or_none()
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            if self.confirmed_recently():
                return True
            log.warning("job %s: lease unconfirmed for too long; stopping", self.job_id)
            self.lost.set()
            return False
        ours = row is not None and row.status == Status.RUNNING.value and row.lease_token == self.token
        if ours:
            self._confirmed = time.monotonic()
        else:
            self.lost.set()
        return ours

    def paused_under_us(self) -> bool:
        """The job was paused while we held it (our token): its stop checkpoint is ours to record."""
        try:
            with session_scope() as session:
                row = session.execute(
                    select(Job.status, Job.lease_token).where(Job.id == self.job_id)).one_or_none()
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            return False
        return row is not None and row.status == Status.PAUSED.value and row.lease_token == self.token

    def retrying(self, fn: Callable[[], T]) -> T:
        """Run a database write, retrying through a blip; LeaseLost once the lease cannot be confirmed."""
        while True:
            try:
                return fn()
            except DBAPIError as exc:
                if not is_transient(exc):
                    raise
                if not self.confirmed_recently():
                    raise LeaseLost(self.job_id) from None
                log.warning("job %s: database unreachable; retrying a write", self.job_id)
                time.sleep(RETRY_PAUSE)

    def write(self, message: str, *, type: str = "message", data: dict[str, Any] | None = None, **fields: Any) -> None:
        def once() -> None:
            with session_scope() as session:
                fenced_event(session, self.job_id, token=self.token, message=message, type=type, data=data,
                             **fields)

        self.retrying(once)

    def update(self, **fields: Any) -> None:
        def once() -> None:
            with session_scope() as session:
                fenced_update(session, self.job_id, token=self.token, **fields)

        self.retrying(once)
