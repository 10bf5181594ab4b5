"""Experiment tracking for a training run (a job's `integrations`): its hooks pass everything on to the
job's own hooks (worker.hooks.JobHooks) and copy metrics to MLflow and wandb; TensorBoard event files
go into the artifact's runs/ folder when training ends. A tracking server that fails mid-run costs
a warning, never the training."""

from worker.tracking.hooks import TrackedHooks, tracked

__all__ = ["TrackedHooks", "tracked"]
