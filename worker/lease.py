"""Holding a job's lease while it trains: a heartbeat thread, and hooks that write through the fence."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hubtune.db import session_scope
from hubtune.lifecycle import LeaseLost, Status, fenced_event, fenced_update, heartbeat
from hubtune.models import Checkpoint, Job, now

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


class JobHooks:
    """The engine's hooks for one job: metrics and checkpoints go to the database under the lease."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.started = time.monotonic()
        self.total_steps = 0

    def _guard(self, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except LeaseLost:
            self.lease.lost.set()

    def on_start(self, *, total_steps: int, trainable_params: int, total_params: int) -> None:
        self.total_steps = total_steps
        data = {"total_steps": total_steps, "trainable_params": trainable_params, "total_params": total_params}
        pct = 100.0 * trainable_params / max(total_params, 1)
        self._guard(
            self.lease.write,
            f"Training started: {total_steps} steps, {trainable_params:,} of {total_params:,} parameters trainable ({pct:.2f}%)",
            data=data, stage="training",
        )

    def on_metrics(self, metrics: dict[str, Any]) -> None:
        step = int(metrics.get("step", 0))
        fields: dict[str, Any] = {}
        if metrics.get("trained_tokens") is not None:
            fields["trained_tokens"] = int(metrics["trained_tokens"])
        if step and self.total_steps:
            rate = (time.monotonic() - self.started) / step
            fields["estimated_finish"] = now() + rate * max(self.total_steps - step, 0)
        self._guard(self.lease.write, f"Step {step}/{self.total_steps}", type="metrics", data=metrics, **fields)

    def on_checkpoint(self, *, step: int, path: Path, metrics: dict[str, Any]) -> None:
        def write() -> None:
            with session_scope() as session:
                fenced_event(session, self.lease.job_id, token=self.lease.token,
                             message=f"Checkpoint saved at step {step}", data={"step": step})
                session.add(Checkpoint(job_id=self.lease.job_id, step=step, path=str(path), metrics=metrics))
                _ring_checkpoint_push(session, self.lease.job_id)

        self._guard(write)

    def on_evaluation(self, *, stage: str, message: str, data: dict[str, Any]) -> None:
        # stage "baseline" (before the first step) or "final" (after training): a message event.
        self._guard(self.lease.write, message, data={"stage": stage, **data})

    def should_stop(self) -> bool:
        return not self.lease.still_ours()


def _ring_checkpoint_push(session, job_id: str) -> None:
    """hub.push_checkpoints: the publish queue pushes the new checkpoint to the checkpoint branch."""
    from hubtune.notifications import PUSH_CHECKPOINT, ring_soft

    spec = session.execute(select(Job.spec).where(Job.id == job_id)).scalar_one_or_none() or {}
    if (spec.get("hub") or {}).get("push_checkpoints"):
        ring_soft(session, PUSH_CHECKPOINT, job_id)
