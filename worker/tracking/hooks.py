"""TrackedHooks: the job's hooks plus its trackers (MLflow, TensorBoard, wandb), as one context manager
around training that ends each tracker's run: FINISHED, KILLED (stopped: paused, cancelled, taken
over) or FAILED (an exception)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from hubtune.errors import JobError
from hubtune.integrations import mlflow_tracking_uri
from hubtune.lifecycle import LeaseLost
from hubtune.settings import Settings
from hubtune.spec import JobRequest
from worker.tracking.params import evaluation_metrics, job_params, step_metrics

log = logging.getLogger(__name__)


class TrackedHooks:
    def __init__(self, inner, trackers: list, *, lease, artifact_dir: Path) -> None:
        self.inner, self.trackers, self.lease, self.artifact_dir = inner, trackers, lease, artifact_dir
        self.stopped = False
        self.last_step = 0

    # --- the engine's hooks: the job's own first, then the trackers -----------------------------------

    def on_start(self, **kwargs) -> None:
        self.inner.on_start(**kwargs)

    def on_metrics(self, metrics: dict[str, Any]) -> None:
        self.inner.on_metrics(metrics)
        self.last_step = int(metrics.get("step") or self.last_step)
        self._each("log", step_metrics(metrics), self.last_step)

    def on_checkpoint(self, **kwargs) -> None:
        self.inner.on_checkpoint(**kwargs)

    def should_stop(self) -> bool:
        stop = self.inner.should_stop()
        self.stopped = self.stopped or stop
        return stop

    def on_evaluation(self, *, stage: str, message: str, data: dict) -> None:
        if (report := getattr(self.inner, "on_evaluation", None)) is not None:
            report(stage=stage, message=message, data=data)
        if values := evaluation_metrics(stage, data):
            self._each("log", values, self.last_step, now=True)

    def flush_metrics(self) -> None:
        if (flush := getattr(self.inner, "flush_metrics", None)) is not None:
            flush()
        self._each("flush")

    # --- the trackers' runs ----------------------------------------------------------------------------

    def __enter__(self) -> TrackedHooks:
        self._each("open")
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None:
            status = "KILLED" if isinstance(exc, LeaseLost) else "FAILED"
        else:
            status = "KILLED" if self.stopped or self.lease.lost.is_set() else "FINISHED"
        self._each("close", status, self.artifact_dir)

    def _each(self, method: str, *args, **kwargs) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args, **kwargs)
            except LeaseLost:
                raise
            except Exception as exc:
                # Tracking is a copy of what the job's events already hold: a tracker that fails is
                # dropped with a warning, and training goes on.
                log.warning("job %s: %s tracking failed in %s", self.lease.job_id, tracker.name, method, exc_info=True)
                self.trackers.remove(tracker)
                try:
                    self.lease.write(f"{tracker.name} tracking stopped: {type(exc).__name__}: {_short(exc, tracker)}; "
                                     "training goes on", level="warn", data={"integration": tracker.name.lower()})
                except LeaseLost:
                    pass


def _short(exc: Exception, tracker) -> str:
    """The error's first line for the job's events, without where the tracking server is (the
    deployment's address, perhaps with credentials in it) or the worker's folders."""
    from worker.failures import without_server_paths

    text = str(exc).splitlines()[0] if str(exc) else ""
    for hidden in getattr(tracker, "hidden", ()):
        if hidden:
            text = text.replace(hidden, "<tracking server>")
    return without_server_paths(text)[:300]


# The package each integration needs on the worker, and the extra that installs it.
NEEDS = {"mlflow": ("mlflow", "tracking"), "tensorboard": ("tensorboard", "tracking"), "wandb": ("wandb", "wandb")}


def _require(kind: str, index: int) -> None:
    module, extra = NEEDS[kind]
    if importlib.util.find_spec(module) is None:
        raise JobError("integration_unavailable", f"The worker that ran this job cannot do {kind} integrations "
                       f"(install hubtune[{extra}] on training workers).", f"integrations[{index}].type")


def tracked(inner, *, job_id: str, request: JobRequest, hyperparameters: dict | None, seed: int, lease,
            artifact_dir: Path, settings: Settings) -> TrackedHooks:
    """The job's hooks with a tracker per integration. The worker checks a named MLflow server against
    its own allow-list again (a JobError naming the field fails the job before training starts)."""
    trackers: list = []
    params = job_params(request, hyperparameters, seed)
    for index, integration in enumerate(request.integrations or []):
        _require(integration.type, index)
        if integration.type == "mlflow":
            from worker.tracking.mlflow_run import MlflowRun

            uri = mlflow_tracking_uri(integration, index, settings)
            options = integration.mlflow
            tags = {"hubtune.job_id": job_id, "hubtune.base_model": request.model,
                    **{f"metadata.{k}": v for k, v in (request.metadata or {}).items()}}
            trackers.append(MlflowRun(job_id=job_id, tracking_uri=uri, lease=lease, params=params, tags=tags,
                                      experiment_name=options.experiment_name if options else None,
                                      run_name=options.run_name if options else None))
        elif integration.type == "tensorboard":
            from worker.tracking.tensorboard_files import TensorboardFiles

            trackers.append(TensorboardFiles(job_id=job_id))
        elif integration.type == "wandb":
            from worker.tracking.wandb_run import WandbRun

            if not settings.wandb_enabled:
                raise JobError("invalid_integration", "wandb integrations are not enabled on this worker "
                               "(HUBTUNE_WANDB_ENABLED).", f"integrations[{index}].type")
            options = integration.wandb
            trackers.append(WandbRun(job_id=job_id, settings_mode=settings.wandb_mode, project=options.project,
                                     name=options.name, entity=options.entity, tags=options.tags, params=params,
                                     folder=artifact_dir))
    return TrackedHooks(inner, trackers, lease=lease, artifact_dir=artifact_dir)
