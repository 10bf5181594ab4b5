"""One rank of a distributed run: ``python -m worker.engine.rank DIR``, started by worker.engine.distributed.

Every rank trains the plan in ``DIR/plan.json`` locally (transformers' Trainer wraps the model in
DistributedDataParallel); rank 0 reports through the events file that the parent relays.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

from worker.engine.plan import TrainPlan
from worker.engine.runtime import freeze_imports, load_training_stack
from worker.engine.trainer import train_local


class RelayHooks:
    """Rank 0 appends hook calls to the events file; every rank agrees on should_stop."""

    def __init__(self, workdir: Path, rank: int) -> None:
        self.workdir, self.rank = workdir, rank

    def _write(self, kind: str, **args) -> None:
        if self.rank != 0:
            return
        with open(self.workdir / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "args": args}, default=str) + "\n")
            f.flush()

    def on_start(self, *, total_steps: int, trainable_params: int, total_params: int) -> None:
        self._write("start", total_steps=total_steps, trainable_params=trainable_params, total_params=total_params)

    def on_metrics(self, metrics: dict) -> None:
        self._write("metrics", metrics=metrics)

    def on_checkpoint(self, *, step: int, path: Path, metrics: dict) -> None:
        self._write("checkpoint", step=step, path=str(path), metrics=metrics)

    def on_evaluation(self, *, stage: str, message: str, data: dict) -> None:
        self._write("evaluation", stage=stage, message=message, data=data)

    def _stop_asked(self) -> bool:
        return (self.workdir / "stop").exists()

    def _parent_alive(self) -> bool:
        # A worker killed outright cannot stop its ranks: they stop themselves once it is gone.
        pid_file = self.workdir / "parent.pid"
        if not pid_file.is_file():
            return True
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (OSError, ValueError):
            return False
        return True

    def should_stop(self) -> bool:
        import torch.distributed as dist

        flag = 1.0 if self.rank == 0 and (self._stop_asked() or not self._parent_alive()) else 0.0
        if not dist.is_initialized():
            return bool(flag)
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        tensor = torch.tensor([flag], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())


def main(workdir: str) -> None:
    load_training_stack()
    freeze_imports()  # as in a warm worker: Trainer's full collection at start skips the imports
    root = Path(workdir)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    plan = TrainPlan.from_json(json.loads((root / "plan.json").read_text()))
    result = train_local(plan, RelayHooks(root, rank))
    (root / f"rank-{rank}.json").write_text(json.dumps({"rank": rank, "world_size": world, "steps": result.steps}))
    if rank == 0:
        (root / "result.json").write_text(json.dumps(dataclasses.asdict(result), default=str))


if __name__ == "__main__":
    main(sys.argv[1])
