"""Choosing a training queue from the workers that registered, by the job's memory estimate.

Rules (prepare and the estimate endpoint apply the same ones):

- A worker is live when its heartbeat is younger than ``LIVE_HEARTBEATS`` heartbeat intervals (and at
  least ``MIN_LIVE_SECONDS``). Only its training queues count (not prepare/publish).
- A worker's memory is the smallest of its GPUs (each training process has one) or, for a CPU-only
  worker, ``CPU_RAM_SHARE`` of its RAM. A GPU worker fits a job when it has ``training.n_gpus`` GPUs and
  the estimate for GPU precision (bf16 autocast unless ``training.bf16`` is false; 4-bit for qlora) fits
  one of them; a CPU worker fits when ``n_gpus`` copies of the float32 estimate fit its share of RAM.
  qlora never fits a CPU worker (bitsandbytes 4-bit needs CUDA).
- The estimate is the job's method's: a DPO job counts its chosen and rejected replies' activations, the
  reference model's passes and, in full fine-tuning, the reference copy (hubtune.estimator), so it may
  need a bigger queue than the same model's SFT job.
- A queue fits when every live worker that serves it fits (any of them may take the job).
- Among queues that fit: GPU-only queues before queues with CPU workers, then the smallest memory, then
  the name. The choice and why go into ``Route.reason``.
- No live worker serving a training queue: the default queue, ``fallback=True`` (a worker may start later).
- Live workers but no queue fits: ``fits=False`` and ``suggestions``: changes that would fit, each
  found by estimating again (gradient checkpointing, a smaller batch, LoRA instead of full, 4-bit).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hubtune.estimator import MemoryEstimate, estimate_request, format_bytes, request_batch_size
from hubtune.models import WorkerRecord
from hubtune.queue import DEFAULT_TRAIN_QUEUE, PREPARE_QUEUE, PUBLISH_QUEUE
from hubtune.spec import JobRequest

LIVE_HEARTBEATS = 3
MIN_LIVE_SECONDS = 15.0
CPU_RAM_SHARE = 0.75
NOT_TRAINING = frozenset({PREPARE_QUEUE, PUBLISH_QUEUE})


@dataclass(frozen=True)
class Capacity:
    """What one live worker offers a training job."""

    worker_id: str
    queues: tuple[str, ...]
    gpu: bool
    devices: int  # GPUs, or 1 for a CPU worker
    memory_bytes: int  # per device (GPU memory) or the usable share of RAM
    device: str  # e.g. "NVIDIA L4" or "CPU (16 cores)"


def capacity(record: WorkerRecord) -> Capacity | None:
    """The worker's capacity, or None when it serves no training queue or reported no memory."""
    queues = tuple(sorted(q for q in record.queues or [] if q not in NOT_TRAINING))
    resources = record.resources or {}
    gpus = [g for g in resources.get("gpus") or [] if g.get("memory_bytes")]
    if not queues:
        return None
    if gpus:
        return Capacity(record.id, queues, True, len(gpus), min(int(g["memory_bytes"]) for g in gpus),
                        str(gpus[0].get("name") or "GPU"))
    ram = resources.get("ram_bytes")
    if not ram:
        return None
    return Capacity(record.id, queues, False, 1, int(ram * CPU_RAM_SHARE), f"CPU ({resources.get('cpu_count', '?')} cores)")


def live_capacities(session: Session, *, heartbeat_seconds: float, at: float | None = None) -> list[Capacity]:
    cutoff = (at or time.time()) - max(LIVE_HEARTBEATS * heartbeat_seconds, MIN_LIVE_SECONDS)
    rows = session.execute(select(WorkerRecord).where(WorkerRecord.last_heartbeat >= cutoff)).scalars()
    return [c for c in (capacity(r) for r in rows) if c is not None]


# --- estimating for a worker --------------------------------------------------------------------------

# (request, gpu, batch_size) -> estimate; raises hubtune.estimator.EstimateError
EstimateFn = Callable[[JobRequest, bool, int], MemoryEstimate]


def estimator_for(*, config: dict[str, Any], task: str | None) -> EstimateFn:
    def run(request: JobRequest, gpu: bool, batch_size: int) -> MemoryEstimate:
        return estimate_request(request, config=config, gpu=gpu, task=task, batch_size=batch_size)

    return run


def _worker_fits(cap: Capacity, request: JobRequest, estimate: EstimateFn, batch_size: int) -> tuple[bool, MemoryEstimate | None]:
    n = request.training.n_gpus
    if request.tuning.type == "qlora" and not cap.gpu:
        return False, None
    if cap.gpu and cap.devices < n:
        return False, None
    est = estimate(request, cap.gpu, batch_size)
    need = est.total_bytes if cap.gpu else est.total_bytes * n
    return need <= cap.memory_bytes, est


@dataclass
class QueueFit:
    queue: str
    workers: list[Capacity]
    fits: bool
    estimate: MemoryEstimate | None

    @property
    def gpu(self) -> bool:
        return all(w.gpu for w in self.workers)

    @property
    def memory_bytes(self) -> int:
        return min(w.memory_bytes for w in self.workers)

    def describe(self) -> str:
        devices = sorted({w.device for w in self.workers})
        n = len(self.workers)
        return (f"queue '{self.queue}' ({n} live worker{'s' if n != 1 else ''}: {', '.join(devices)}, "
                f"{format_bytes(self.memory_bytes)} usable)")


def fit_queues(workers: list[Capacity], request: JobRequest, estimate: EstimateFn, batch_size: int) -> list[QueueFit]:
    """Every training queue with its verdict, best first (see the module docstring for the order)."""
    by_queue: dict[str, list[Capacity]] = {}
    for w in workers:
        for q in w.queues:
            by_queue.setdefault(q, []).append(w)
    out = []
    for queue, members in by_queue.items():
        verdicts = [_worker_fits(w, request, estimate, batch_size) for w in members]
        estimates = [e for _, e in verdicts if e is not None]
        out.append(QueueFit(queue, members, all(ok for ok, _ in verdicts), estimates[0] if estimates else None))
    return sorted(out, key=lambda f: (not f.fits, not f.gpu, f.memory_bytes, f.queue))


# --- the route ----------------------------------------------------------------------------------------


@dataclass
class Suggestion:
    param: str
    value: Any
    total_bytes: int
    queue: str

    def text(self) -> str:
        shown = self.value if " + " in self.param else _show(self.value)
        return f"{self.param} {shown} (about {format_bytes(self.total_bytes)}, queue '{self.queue}')"

    def as_dict(self) -> dict[str, Any]:
        return {"param": self.param, "value": self.value, "total_bytes": self.total_bytes, "queue": self.queue,
                "message": self.text()}


def _show(value: Any) -> str:
    return "true" if value is True else f'"{value}"' if isinstance(value, str) else str(value)


@dataclass
class Route:
    queue: str | None
    fits: bool
    reason: str
    estimate: MemoryEstimate | None
    fallback: bool = False
    suggestions: list[Suggestion] = field(default_factory=list)

    @property
    def param(self) -> str:
        """The request field a refusal names: the first change that would fit, else tuning."""
        return self.suggestions[0].param.split(" + ")[0] if self.suggestions else "tuning"


def choose_queue(
    *, workers: list[Capacity], request: JobRequest, estimate: EstimateFn, batch_size: int,
    default_queue: str = DEFAULT_TRAIN_QUEUE,
) -> Route:
    """The queue for `request` among `workers` (live capacities); raises EstimateError when the
    model or method cannot be estimated."""
    if not workers:
        est = estimate(request, True, batch_size)
        return Route(default_queue, False, (
            f"no live worker serves a training queue; the job goes to the default queue '{default_queue}' and "
            f"waits for a worker with about {format_bytes(est.total_bytes)} (estimated for a GPU)"
        ), est, fallback=True)
    fits = fit_queues(workers, request, estimate, batch_size)
    best = fits[0]
    if best.fits:
        others = len(fits) - 1
        reason = (f"{best.describe()} fits the estimated {format_bytes(best.estimate.total_bytes)}"
                  + (f"; the smallest that fits among {len(fits)} queues" if others else ""))
        return Route(best.queue, True, reason, best.estimate)
    largest = max(fits, key=lambda f: f.memory_bytes)
    est = largest.estimate or estimate(request, largest.gpu, batch_size)
    suggestions = suggest(workers=workers, request=request, estimate=estimate, batch_size=batch_size)
    reason = (f"no live worker can fit this job: it needs about {est.summary()}; the largest is "
              f"{largest.describe()}")
    if request.tuning.type == "qlora" and not any(w.gpu for w in workers):
        reason += "; qlora needs a CUDA GPU and no GPU worker is live"
    if request.training.n_gpus > 1:
        reason += f"; training.n_gpus is {request.training.n_gpus}"
    reason += (". What would fit: " + "; or ".join(s.text() for s in suggestions)) if suggestions else \
        ". No smaller configuration tried (gradient checkpointing, batch size 1, LoRA, 4-bit) fits either"
    return Route(None, False, reason, est, suggestions=suggestions)


def _with(request: JobRequest, **changes: Any) -> JobRequest:
    spec = request.model_dump()
    for path, value in changes.items():
        section, name = path.split(".")
        spec[section][name] = value
    return JobRequest.model_validate(spec)


def _batch_param(request: JobRequest) -> str:
    if request.method and request.method.supervised:
        return "method.supervised.hyperparameters.batch_size"
    return "hyperparameters.batch_size"


def suggest(*, workers: list[Capacity], request: JobRequest, estimate: EstimateFn, batch_size: int) -> list[Suggestion]:
    """Changes to `request` that would fit a live queue, least intrusive first; each is estimated again."""

    def first_fit(candidate: JobRequest, batch: int) -> QueueFit | None:
        best = fit_queues(workers, candidate, estimate, batch)[0]
        return best if best.fits else None

    def smallest_batch_change(candidate: JobRequest) -> tuple[int, QueueFit] | None:
        b = batch_size // 2
        while b >= 1:
            if fit := first_fit(candidate, b):
                return b, fit
            b //= 2
        return None

    out: list[Suggestion] = []
    tuning = request.tuning.type
    checkpointed = request.training.gradient_checkpointing
    singles: list[tuple[str, Any, JobRequest]] = []
    if not checkpointed:
        singles.append(("training.gradient_checkpointing", True, _with(request, **{"training.gradient_checkpointing": True})))
    if tuning in ("full", "adapter"):
        singles.append(("tuning.type", "lora", _with(request, **{"tuning.type": "lora"})))
    if tuning != "qlora" and any(w.gpu for w in workers):
        singles.append(("tuning.type", "qlora", _with(request, **{"tuning.type": "qlora"})))
    for param, value, candidate in singles:
        if fit := first_fit(candidate, batch_size):
            out.append(Suggestion(param, value, fit.estimate.total_bytes, fit.queue))
    if found := smallest_batch_change(request):
        b, fit = found
        out.insert(1 if out and out[0].param == "training.gradient_checkpointing" else 0,
                   Suggestion(_batch_param(request), b, fit.estimate.total_bytes, fit.queue))
    if out:
        return out
    # Nothing alone fits: the changes together, with the largest batch that then fits.
    combos: list[tuple[str, dict[str, Any]]] = []
    if not checkpointed:
        combos.append(("training.gradient_checkpointing", {}))
    if tuning in ("full", "adapter"):
        combos.append(("tuning.type + training.gradient_checkpointing", {"tuning.type": "lora"}))
    if tuning != "qlora" and any(w.gpu for w in workers):
        combos.append(("tuning.type + training.gradient_checkpointing", {"tuning.type": "qlora"}))
    for param, change in combos:
        combined = _with(request, **change, **{"training.gradient_checkpointing": True})
        found = smallest_batch_change(combined)
        if found:
            b, fit = found
            value = ", ".join([*(_show(v) for v in change.values()), "true", str(b)])
            return [Suggestion(f"{param} + {_batch_param(request)}", value, fit.estimate.total_bytes, fit.queue)]
    return []


def route_request(
    session: Session, *, request: JobRequest, config: dict[str, Any], heartbeat_seconds: float,
    task: str | None = None, batch_size: int | None = None,
) -> Route:
    """The route for `request` by hubtune.estimator.estimate_request's figure, which the estimate
    endpoint and prepare share (prepare adds only the data's task for a request that names none)."""
    workers = live_capacities(session, heartbeat_seconds=heartbeat_seconds)
    estimate = estimator_for(config=config, task=task)
    return choose_queue(workers=workers, request=request, estimate=estimate,
                        batch_size=batch_size or request_batch_size(request))
