"""A wandb run per job (OpenAI's wandb integration), in the deployment's wandb mode: offline by default,
its files in the artifact's wandb/ folder for `wandb sync`; online only where the operator chose it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path


class WandbRun:
    name = "wandb"

    def __init__(self, *, job_id: str, settings_mode: str, project: str, name: str | None, entity: str | None,
                 tags: list[str], params: dict[str, str], folder: Path) -> None:
        self.job_id, self.mode = job_id, settings_mode
        self.project, self.run_name, self.entity, self.tags = project, name or job_id, entity, tags
        self.params, self.folder = params, Path(folder)
        self.run = None

    def open(self) -> None:
        import wandb

        self.folder.mkdir(parents=True, exist_ok=True)
        # The job id names the run: a resumed job continues it (resume="allow").
        run_id = re.sub(r"[^A-Za-z0-9_-]", "-", self.job_id)
        self.run = wandb.init(mode=self.mode, dir=str(self.folder), project=self.project, entity=self.entity,
                              name=self.run_name, tags=self.tags or None, config=self.params, id=run_id,
                              resume="allow", settings=wandb.Settings(
            # The files land in the pushed artifact: no host, user, paths, git or code of the worker in them.
            host="hubtune-worker", console="off", silent=True, x_disable_meta=True, x_disable_stats=True, disable_git=True,
            disable_code=True, save_code=False))

    def log(self, metrics: dict[str, float], step: int, *, now: bool = False) -> None:
        self.run.log(metrics, step=step)

    def flush(self) -> None:
        pass

    def close(self, status: str, artifact_dir=None) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)
        _keep_only_the_run(self.folder / "wandb")


def _keep_only_the_run(folder: Path) -> None:
    """What `wandb sync` needs stays (the .wandb file, files/); what would publish the worker's insides
    with the artifact goes: debug logs (paths, host), links out of the folder, the package list."""
    for path in list(folder.iterdir()) if folder.is_dir() else []:
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            for name in ("logs", "tmp"):
                shutil.rmtree(path / name, ignore_errors=True)
            (path / "files" / "requirements.txt").unlink(missing_ok=True)
