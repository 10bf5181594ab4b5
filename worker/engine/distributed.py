"""Multi-device training: ``training.n_gpus > 1`` runs the plan under torch.distributed.

The worker task's process (the parent, which holds the job's lease and its hooks) starts
``python -m torch.distributed.run --standalone --nproc_per_node N -m worker.engine.distributed DIR``
in a new process group. Every rank runs the same ``train`` (transformers' Trainer wraps the model in
DistributedDataParallel: NCCL on CUDA, gloo on CPU, where N processes share the CPU). Only rank 0
reports: it appends its hook calls to ``DIR/events.jsonl``, which the parent tails and replays on the
real hooks. The parent polls ``should_stop()``; when it turns true it creates ``DIR/stop``, which
rank 0 sees after the next step and all ranks agree on (an all-reduce), so they stop at the same
step and save the stop checkpoint together. If the ranks have not exited ``STOP_GRACE_S`` later
(or the parent itself fails) the parent terminates the whole process group. Rank 0 writes
``DIR/result.json`` (the TrainResult); every rank writes ``DIR/rank-<r>.json`` so the parent can
record who ran (``result.data["ranks"]``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hubtune.spec import Training, Tuning
from worker.engine.options import OptionError

POLL_S = 0.5
STOP_GRACE_S = 60.0
KILL_GRACE_S = 10.0
PROJECT_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# Plan <-> JSON


def plan_to_json(plan) -> dict:
    out = {}
    for f in dataclasses.fields(plan):
        value = getattr(plan, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, (Tuning, Training)):
            value = value.model_dump(mode="json")
        out[f.name] = value
    return out


def plan_from_json(data: dict):
    from worker.engine.trainer import TrainPlan

    values = dict(data)
    for name in ("model_dir", "train_file", "valid_file", "output_dir", "checkpoints_dir", "resume_from"):
        if values.get(name) is not None:
            values[name] = Path(values[name])
    values["tuning"] = Tuning.model_validate(values["tuning"])
    values["training"] = Training.model_validate(values["training"])
    return TrainPlan(**values)


# ---------------------------------------------------------------------------------------------
# Parent: launch, relay, stop


def _processes(n: int) -> int:
    if torch.cuda.is_available() and torch.cuda.device_count() < n:
        raise OptionError(
            f"training.n_gpus is {n} but this worker has {torch.cuda.device_count()} GPUs", param="training.n_gpus"
        )
    return n


def _flush_metrics(hooks) -> None:
    from worker.engine.trainer import _flush_metrics as flush

    flush(hooks)


def _relay(line: str, hooks) -> None:
    event = json.loads(line)
    kind, args = event["kind"], event["args"]
    if kind == "start":
        hooks.on_start(**args)
    elif kind == "metrics":
        hooks.on_metrics(args["metrics"])
    elif kind == "checkpoint":
        _flush_metrics(hooks)  # the steps before a checkpoint are written before its event
        hooks.on_checkpoint(step=args["step"], path=Path(args["path"]), metrics=args["metrics"])
    elif kind == "evaluation" and getattr(hooks, "on_evaluation", None) is not None:
        hooks.on_evaluation(**args)


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def train_distributed(plan, hooks):
    """Run ``plan`` on ``training.n_gpus`` processes and return rank 0's TrainResult."""
    from worker.engine.trainer import TrainResult

    n = _processes(plan.training.n_gpus)
    workdir = Path(tempfile.mkdtemp(prefix="hubtune-ddp-"))
    (workdir / "plan.json").write_text(json.dumps(plan_to_json(plan)))
    (workdir / "parent.pid").write_text(str(os.getpid()))
    events = workdir / "events.jsonl"
    events.touch()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc_per_node", str(n), "-m", "worker.engine.distributed", str(workdir)]
    with open(workdir / "log.txt", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=str(PROJECT_ROOT), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    stop_asked: float | None = None
    offset = 0
    try:
        while True:
            done = proc.poll() is not None
            with open(events, encoding="utf-8") as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            offset += len(complete.encode("utf-8"))
            for line in complete.splitlines():
                _relay(line, hooks)
            if done:
                break
            if stop_asked is None and hooks.should_stop():
                (workdir / "stop").touch()
                stop_asked = time.monotonic()
            elif stop_asked is not None and time.monotonic() - stop_asked > STOP_GRACE_S:
                _stop_group(proc)
            time.sleep(POLL_S)
    finally:
        _stop_group(proc)
        _flush_metrics(hooks)  # metrics the hooks still buffer (worker.hooks batches them)
    try:
        return _collect(workdir, proc.returncode, stopped=stop_asked is not None, n=n, result_type=TrainResult)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _collect(workdir: Path, returncode: int, *, stopped: bool, n: int, result_type):
    result_path = workdir / "result.json"
    if returncode != 0 or not result_path.is_file():
        if stopped:  # terminated after a stop request: nothing to report but the stop
            return result_type(stopped=True, steps=0, trained_tokens=0, metrics={}, reference={},
                               trainable_params=0, total_params=0, data={"world_size": n})
        tail = (workdir / "log.txt").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"distributed training failed (exit code {returncode}): {tail}")
    result = result_type(**json.loads(result_path.read_text()))
    result.data["ranks"] = [json.loads(p.read_text()) for p in sorted(workdir.glob("rank-*.json"))]
    return result


# ---------------------------------------------------------------------------------------------
# Child: one rank


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
    from worker.engine.runtime import freeze_imports, load_training_stack
    from worker.engine.trainer import train

    load_training_stack()
    freeze_imports()  # as in a warm worker: Trainer's full collection at start skips the imports
    root = Path(workdir)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    plan = plan_from_json(json.loads((root / "plan.json").read_text()))
    result = train(plan, RelayHooks(root, rank))
    (root / f"rank-{rank}.json").write_text(json.dumps({"rank": rank, "world_size": world, "steps": result.steps}))
    if rank == 0:
        (root / "result.json").write_text(json.dumps(dataclasses.asdict(result), default=str))


if __name__ == "__main__":
    main(sys.argv[1])
