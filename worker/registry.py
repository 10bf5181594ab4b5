"""Workers register what they have (GPUs or CPU and RAM) and which queues they serve, and keep a
heartbeat on their row, so that the API and the dashboard can show them and prepare can route jobs."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading

from celery import signals
from sqlalchemy import delete

from hubtune.db import session_scope
from hubtune.models import WorkerRecord, now
from hubtune.queue import get_celery, settings_of

log = logging.getLogger(__name__)
_state: dict = {"id": None, "stop": threading.Event(), "job": None}


def detect_resources() -> dict:
    resources: dict = {"cpu_count": os.cpu_count() or 1, "gpus": []}
    try:
        resources["ram_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        resources["ram_bytes"] = None
    try:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                resources["gpus"].append({"name": props.name, "memory_bytes": props.total_memory})
    except ImportError:
        pass
    return resources


def parse_gpu_usage(text: str, visible: str | None) -> list[dict]:
    """nvidia-smi's `index, memory.used [MiB], utilization.gpu [%]` lines, in the order this process's
    CUDA devices are numbered (CUDA_VISIBLE_DEVICES picks and reorders the physical GPUs)."""
    by_index: dict[str, dict] = {}
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            by_index[parts[0]] = {"memory_used_bytes": int(float(parts[1]) * 1024 * 1024),
                                  "utilization": float(parts[2]) / 100}
        except (ValueError, IndexError):
            by_index[parts[0]] = {}  # "[N/A]" on some boards: leave that GPU's figures out
    order = [v.strip() for v in visible.split(",")] if visible else sorted(by_index, key=lambda i: int(i) if i.isdigit() else 0)
    return [by_index.get(i, {}) for i in order]


def gpu_usage() -> list[dict] | None:
    """Device-wide memory in use and utilisation per GPU, from nvidia-smi: it sees the training child's
    memory too, and it never initialises CUDA in this (forking) parent process."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=index,memory.used,utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_gpu_usage(out, os.environ.get("CUDA_VISIBLE_DEVICES"))


def with_gpu_usage(resources: dict) -> dict:
    gpus = [dict(g) for g in resources.get("gpus") or []]
    usage = gpu_usage() if gpus else None
    for gpu, figures in zip(gpus, usage or []):
        gpu.update(figures)
    return {**resources, "gpus": gpus}


def set_current_job(job_id: str | None) -> None:
    _state["job"] = job_id
    if _state["id"] is None:
        return
    try:
        with session_scope() as session:
            row = session.get(WorkerRecord, _state["id"])
            if row is not None:
                row.current_job_id, row.last_heartbeat = job_id, now()
    except Exception:
        log.exception("could not record the current job")


def _beat(interval: float) -> None:
    while not _state["stop"].wait(interval):
        try:
            with session_scope() as session:
                row = session.get(WorkerRecord, _state["id"])
                if row is not None:
                    row.last_heartbeat = now()
                    if (row.resources or {}).get("gpus"):
                        row.resources = with_gpu_usage(row.resources)  # a new dict, so the JSON column saves
        except Exception:
            log.exception("worker heartbeat failed")


@signals.worker_init.connect
def _name_worker(**_kwargs) -> None:
    # Runs in the main process before the pool forks, so task processes inherit the worker's id.
    _state["id"] = f"{socket.gethostname()}:{os.getpid()}"


@signals.worker_ready.connect
def _register(sender=None, **_kwargs) -> None:
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values()) if sender else []
    worker_id = _state["id"] or f"{socket.gethostname()}:{os.getpid()}"
    with session_scope() as session:
        session.merge(WorkerRecord(id=worker_id, hostname=socket.gethostname(), pid=os.getpid(), queues=queues,
                                   resources=with_gpu_usage(detect_resources()), started_at=now(),
                                   last_heartbeat=now()))
    _state["id"] = worker_id
    # The consumer's app carries the worker's settings; without a sender, the process's app does.
    interval = settings_of(sender.app if sender else get_celery()).heartbeat_seconds
    threading.Thread(target=_beat, args=(interval,), name="worker-heartbeat", daemon=True).start()


@signals.worker_shutdown.connect
def _unregister(**_kwargs) -> None:
    _state["stop"].set()
    if _state["id"] is None:
        return
    with session_scope() as session:
        session.execute(delete(WorkerRecord).where(WorkerRecord.id == _state["id"]))
