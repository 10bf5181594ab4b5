"""The training engine's hooks for one job: metrics, checkpoints and evaluations written under its lease."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hubtune.db import session_scope
from hubtune.lifecycle import RUNNING_OR_PAUSED, LeaseLost, fenced_event
from hubtune.models import Checkpoint, Job, JobEvent, now
from hubtune.step_events import METRICS, SERIES, StepThinner, is_evaluation, step_message
from hubtune.storage import Storage, StorageUnavailable
from worker.lease import Lease

METRICS_FLUSH_SECONDS = 1.0
# How often should_stop() reads the job row. Reading it after every step cost ~1.2 ms a step on SQLite
# (a PostgreSQL round trip more): ~1 % of a 150 ms CPU step, far more of a short GPU step. A cancel or
# pause now lands within this interval plus one step; a lease the heartbeat found lost stops at once.
STOP_POLL_SECONDS = 0.5


class JobHooks:
    """The engine's hooks for one job: metrics and checkpoints go to the database under the lease."""

    def __init__(self, lease: Lease, plan: Any = None, storage: Storage | None = None) -> None:
        self.lease = lease
        self.plan = plan  # the TrainPlan: should_stop() turns off its stop-step checkpoint when taken over
        self.storage = storage  # where a checkpoint is kept (object storage: uploaded) before it is recorded
        self.started = time.monotonic()
        self.total_steps = 0
        self._thinner = StepThinner(total_steps=0)
        self._pending_metrics: list[tuple] = []  # metrics events not written yet (see on_metrics)
        self._metrics_flushed = self.started
        self._stop_polled = float("-inf")  # the first step reads the row

    def _guard(self, fn, *args, **kwargs) -> None:
        # A database blip (PostgreSQL restarting) is retried while the lease is surely still ours
        # (Lease.retrying); a lost lease stops training at the next step instead of failing the job.
        try:
            self.lease.retrying(lambda: fn(*args, **kwargs))
        except LeaseLost:
            self.lease.lost.set()

    def on_start(self, *, total_steps: int, trainable_params: int, total_params: int) -> None:
        self.total_steps = total_steps
        self._thinner = StepThinner(total_steps=total_steps)
        data = {"total_steps": total_steps, "trainable_params": trainable_params, "total_params": total_params}
        pct = 100.0 * trainable_params / max(total_params, 1)
        self._guard(
            self.lease.write,
            f"Training started: {total_steps} steps, {trainable_params:,} of {total_params:,} parameters trainable ({pct:.2f}%)",
            data=data, stage="training",
        )

    def on_metrics(self, metrics: dict[str, Any]) -> None:
        # Batched: one transaction per METRICS_FLUSH_SECONDS instead of one per logged step (with
        # per-step logging that was ~1 ms a step on SQLite, a PostgreSQL round trip more: it counts
        # for fast steps; bench/training_overhead.py measures it).
        # Cancel and pause do not wait on this: should_stop() polls the row on its own interval. The
        # last step, every evaluation and the engine's flush_metrics() at the end write at once.
        # Every step is stored; a long run shows only some as events (hubtune.step_events), the others
        # are points of the metrics series only.
        step = int(metrics.get("step", 0))
        fields: dict[str, Any] = {}
        if metrics.get("trained_tokens") is not None:
            fields["trained_tokens"] = int(metrics["trained_tokens"])
        if step and self.total_steps:
            rate = (time.monotonic() - self.started) / step
            fields["estimated_finish"] = now() + rate * max(self.total_steps - step, 0)
        kind = METRICS if self._thinner.shows(metrics) else SERIES
        message = step_message(metrics, total_steps=self.total_steps)
        self._pending_metrics.append((now(), message, metrics, fields, kind))
        due = time.monotonic() - self._metrics_flushed >= METRICS_FLUSH_SECONDS
        if due or step >= self.total_steps or is_evaluation(metrics):
            self.flush_metrics()

    def flush_metrics(self) -> None:
        """Write the buffered metrics events (in one transaction, each with the time it was reported)."""
        pending, self._pending_metrics = self._pending_metrics, []
        self._metrics_flushed = time.monotonic()
        if not pending:
            return

        def write() -> None:
            with session_scope() as session:
                *earlier, (_, message, data, fields, kind) = pending
                # Earlier steps first (ids keep the steps' order); the fence then checks the lease for all.
                session.add_all(JobEvent(job_id=self.lease.job_id, created_at=at, message=text, type=row_type,
                                         level="info", data=values) for at, text, values, _, row_type in earlier)
                # Paused too: a pause stops training at the next step, and the steps logged before it
                # (still buffered when the pause landed) belong to the job as much as its stop checkpoint.
                fenced_event(session, self.lease.job_id, token=self.lease.token, statuses=RUNNING_OR_PAUSED,
                             message=message, type=kind, data=data, **fields)

        self._guard(write)

    def on_checkpoint(self, *, step: int, path: Path, metrics: dict[str, Any]) -> None:
        # Allowed while paused: pausing stops training at the next step, and the checkpoint saved at
        # that step is what resume continues from. The token still has to be ours, so a worker whose
        # job was taken over (re-queued, re-claimed) cannot record anything.
        ref = self._keep(step, path)
        if ref is None:
            return

        def write() -> None:
            with session_scope() as session:
                fenced_event(session, self.lease.job_id, token=self.lease.token, statuses=RUNNING_OR_PAUSED,
                             message=f"Checkpoint saved at step {step}", data={"step": step})
                session.add(Checkpoint(job_id=self.lease.job_id, step=step, path=ref, metrics=metrics))
                _ring_checkpoint_push(session, self.lease.job_id)

        self._guard(write)

    def _keep(self, step: int, path: Path) -> str | None:
        """Store the checkpoint (object storage: upload it) while the lease is ours or paused under us;
        its ref, or None. A store that stays unreachable past its retry budget costs this checkpoint,
        not the training: a warning, and the next checkpoint tries again."""
        if self.storage is None:
            return str(path)
        if not (self.lease.still_ours() or self.lease.paused_under_us()):
            return None  # taken over: the new holder's checkpoints are the job's now
        try:
            return self.storage.keep_checkpoint(self.lease.job_id, path)
        except StorageUnavailable as exc:
            self._guard(self.lease.write, f"Checkpoint at step {step} could not be stored; training goes on "
                        f"and the next checkpoint tries again ({exc})", level="warn", data={"step": step})
            return None

    def on_evaluation(self, *, stage: str, message: str, data: dict[str, Any]) -> None:
        # stage "baseline" (before the first step) or "final" (after training): a message event.
        self._guard(self.lease.write, message, data={"stage": stage, **data})

    def should_stop(self) -> bool:
        if not self.lease.lost.is_set() and time.monotonic() - self._stop_polled < STOP_POLL_SECONDS:
            return False
        self._stop_polled = time.monotonic()
        if self.lease.still_ours():
            return False
        self._thinner.stopping = True  # the step training stops at is logged, and shown
        # Only a pause keeps the checkpoint saved at the stop step. A worker whose job was cancelled or
        # re-queued and claimed elsewhere (it froze past its lease) must not write into the job's
        # checkpoints folder, which the new holder is using.
        if self.plan is not None and not self.lease.paused_under_us():
            self.plan.checkpoint_on_stop = False
        return True


def _ring_checkpoint_push(session, job_id: str) -> None:
    """hub.push_checkpoints: the publish queue pushes the new checkpoint to the checkpoint branch."""
    from hubtune.notifications import ring_soft
    from hubtune.queue import PUSH_CHECKPOINT

    spec = session.execute(select(Job.spec).where(Job.id == job_id)).scalar_one_or_none() or {}
    if (spec.get("hub") or {}).get("push_checkpoints"):
        ring_soft(session, PUSH_CHECKPOINT, job_id)
