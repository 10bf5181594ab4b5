"""Multi-device training: ``training.n_gpus > 1`` runs the plan under torch.distributed.

The worker task's process (the parent, which holds the job's lease and its hooks) starts
``python -m torch.distributed.run --standalone --nproc_per_node N -m worker.engine.rank DIR``
in a new process group. Every rank (worker.engine.rank) runs the same ``train_local`` (transformers'
Trainer wraps the model in DistributedDataParallel: NCCL on CUDA, gloo on CPU, where N processes share
the CPU). Only rank 0
reports: it appends its hook calls to ``DIR/events.jsonl``, which the parent tails and replays on the
real hooks. The parent polls ``should_stop()``; when it turns true it creates ``DIR/stop``, which
rank 0 sees after the next step and all ranks agree on (an all-reduce), so they stop at the same
step and save the stop checkpoint together. If the ranks have not exited ``STOP_GRACE_S`` later
(or the parent itself fails) the parent terminates the whole process group. Rank 0 writes
``DIR/result.json`` (the TrainResult); every rank writes ``DIR/rank-<r>.json`` so the parent can
record who ran (``result.data["ranks"]``).
"""

from __future__ import annotations

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

from worker.engine.options import OptionError
from worker.engine.plan import TrainPlan, TrainResult, flush_metrics

POLL_S = 0.5
STOP_GRACE_S = 60.0
KILL_GRACE_S = 10.0
PROJECT_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# Parent: launch, relay, stop


def _processes(n: int) -> int:
    if torch.cuda.is_available() and torch.cuda.device_count() < n:
        raise OptionError(
            f"training.n_gpus is {n} but this worker has {torch.cuda.device_count()} GPUs", param="training.n_gpus"
        )
    return n


def _relay(line: str, hooks) -> None:
    event = json.loads(line)
    kind, args = event["kind"], event["args"]
    if kind == "start":
        hooks.on_start(**args)
    elif kind == "metrics":
        hooks.on_metrics(args["metrics"])
    elif kind == "checkpoint":
        flush_metrics(hooks)  # the steps before a checkpoint are written before its event
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


def train_distributed(plan: TrainPlan, hooks) -> TrainResult:
    """Run ``plan`` on ``training.n_gpus`` processes and return rank 0's TrainResult."""
    n = _processes(plan.training.n_gpus)
    workdir = Path(tempfile.mkdtemp(prefix="hubtune-ddp-"))
    (workdir / "plan.json").write_text(json.dumps(plan.to_json()))
    (workdir / "parent.pid").write_text(str(os.getpid()))
    events = workdir / "events.jsonl"
    events.touch()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc_per_node", str(n), "-m", "worker.engine.rank", str(workdir)]
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
        flush_metrics(hooks)  # metrics the hooks still buffer (worker.hooks batches them)
    try:
        return _collect(workdir, proc.returncode, stopped=stop_asked is not None, n=n)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _collect(workdir: Path, returncode: int, *, stopped: bool, n: int) -> TrainResult:
    result_path = workdir / "result.json"
    if returncode != 0 or not result_path.is_file():
        if stopped:  # terminated after a stop request: nothing to report but the stop
            return TrainResult(stopped=True, steps=0, trained_tokens=0, metrics={}, reference={},
                               trainable_params=0, total_params=0, data={"world_size": n})
        tail = (workdir / "log.txt").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"distributed training failed (exit code {returncode}): {tail}")
    result = TrainResult(**json.loads(result_path.read_text()))
    result.data["ranks"] = [json.loads(p.read_text()) for p in sorted(workdir.glob("rank-*.json"))]
    return result
