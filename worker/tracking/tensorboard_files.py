"""TensorBoard event files in the artifact's runs/ folder (where the Hub's "Training metrics" tab and
`tensorboard --logdir` look), written with torch's SummaryWriter when training ends, from the job's
stored metrics series: every step of every attempt, a resumed job's steps before its pause included."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from hubtune.db import session_scope
from hubtune.models import JobEvent
from hubtune.step_events import SERIES_TYPES
from worker.tracking.params import step_metrics

RUNS = "runs"


def metrics_series(job_id: str) -> list[tuple[float, dict]]:
    with session_scope() as session:
        rows = session.execute(select(JobEvent.created_at, JobEvent.data).where(
            JobEvent.job_id == job_id, JobEvent.type.in_(SERIES_TYPES)).order_by(JobEvent.id)).all()
    return [(at, data) for at, data in rows if data]


def _tag(name: str) -> str:
    # train_loss -> train/loss: TensorBoard groups the charts by the part before the slash.
    for prefix in ("train_", "valid_"):
        if name.startswith(prefix):
            return f"{prefix[:-1]}/{name[len(prefix):]}"
    return f"train/{name}"


class TensorboardFiles:
    name = "TensorBoard"

    def __init__(self, *, job_id: str) -> None:
        self.job_id = job_id

    def open(self) -> None:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (tensorboard installed: fail early)

    def log(self, metrics: dict[str, float], step: int, *, now: bool = False) -> None:
        pass  # written from the stored series at the end

    def flush(self) -> None:
        pass

    def close(self, status: str, artifact_dir: Path | None = None) -> None:
        if status != "FINISHED" or artifact_dir is None:
            return  # only a finished training keeps an artifact
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(Path(artifact_dir) / RUNS / self.job_id))
        try:
            for at, data in metrics_series(self.job_id):
                step = int(data.get("step") or 0)
                for name, value in step_metrics(data).items():
                    writer.add_scalar(_tag(name), value, global_step=step, walltime=at)
        finally:
            writer.close()
