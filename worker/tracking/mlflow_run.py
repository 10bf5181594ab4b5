"""One MLflow run per job, through mlflow's own client (MlflowClient, mlflow-skinny): created on the
job's first attempt with its params and tags, continued by a later attempt (resume after a pause or a
worker restart; the run id is kept in the job's events), its metrics logged at their steps in batches."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from hubtune.db import session_scope
from hubtune.models import JobEvent

# A tracking server that is down must not hold training up for mlflow's default retry schedule (minutes):
# one retry, a short timeout. Read by mlflow at request time; a deployment may still set its own.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

RUN_ID = "mlflow_run_id"  # the event data key that remembers the job's run
DEFAULT_EXPERIMENT = "hubtune"
SEND_SECONDS = 2.0  # metrics go in one request per this interval, not one per step
BATCH = 1000  # MLflow's most metrics per log_batch


def recorded_run_id(job_id: str) -> str | None:
    """The run an earlier attempt of this job created (from its events, never searched on the server:
    a run someone else tagged with this job's id must not receive its metrics)."""
    with session_scope() as session:
        return session.execute(
            select(JobEvent.data[RUN_ID].as_string()).where(
                JobEvent.job_id == job_id, JobEvent.data[RUN_ID].as_string().is_not(None))
            .order_by(JobEvent.id.desc()).limit(1)).scalar_one_or_none()


class MlflowRun:
    name = "MLflow"

    def __init__(self, *, job_id: str, tracking_uri: str, experiment_name: str | None, run_name: str | None,
                 params: dict[str, str], tags: dict[str, str], lease) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        # Kept out of the warnings a user reads (TrackedHooks): the server's address, and its host alone.
        self.hidden = (tracking_uri.rstrip("/"), urlsplit(tracking_uri).netloc)
        self.job_id = job_id
        self.experiment_name = experiment_name or DEFAULT_EXPERIMENT
        self.run_name = run_name or job_id
        self.params, self.tags, self.lease = params, tags, lease
        self.run_id: str | None = None
        self._pending: list[Any] = []
        self._sent = time.monotonic()

    def open(self) -> None:
        run_id = recorded_run_id(self.job_id)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")  # the same run goes on
            self.run_id = run_id
            self.lease.write(f"MLflow run {run_id} continues", data={RUN_ID: run_id})
            return
        from mlflow.entities import Param

        experiment_id = self._experiment_id()
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=self.tags)
        self.run_id = run.info.run_id
        # Recorded at once, so that an attempt after a crash continues this run instead of starting another.
        self.lease.write(f"MLflow run {self.run_id} in experiment '{self.experiment_name}'",
                         data={RUN_ID: self.run_id, "mlflow_experiment_id": experiment_id})
        params = [Param(name, value[:6000]) for name, value in sorted(self.params.items())]
        for start in range(0, len(params), 100):  # MLflow's most params per log_batch
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment_name)
        except MlflowException:  # another job created it meanwhile
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is None:
                raise
            return found.experiment_id

    def log(self, metrics: dict[str, float], step: int, *, now: bool = False) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._pending.extend(Metric(name, value, stamp, step) for name, value in metrics.items())
        if now or time.monotonic() - self._sent >= SEND_SECONDS:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._sent = time.monotonic()
        for start in range(0, len(pending), BATCH):
            self.client.log_batch(self.run_id, metrics=pending[start:start + BATCH])

    def close(self, status: str, artifact_dir=None) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)
