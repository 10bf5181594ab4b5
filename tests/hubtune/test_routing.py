"""Routing a job to a training queue by what the live workers registered (rows on SQLite and PostgreSQL)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import delete

from hubtune.estimator import estimate
from hubtune.models import WorkerRecord
from hubtune.routing import CPU_RAM_SHARE, live_capacities, route_request
from hubtune.spec import JobRequest, Tuning

GiB = 1024**3
LLAMA_7B = {
    "model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 11008,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
}
BERT_BASE = {
    "model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 3072,
    "num_attention_heads": 12, "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
}
HEARTBEAT = 5.0


def gpu(name: str, memory_gib: float, n: int = 1) -> dict:
    return {"cpu_count": 16, "ram_bytes": 128 * GiB, "gpus": [{"name": name, "memory_bytes": int(memory_gib * GiB)}] * n}


def cpu(ram_gib: float) -> dict:
    return {"cpu_count": 8, "ram_bytes": int(ram_gib * GiB), "gpus": []}


@pytest.fixture
def workers(sessions):
    """add(id, queues, resources, age_s=0): register a worker row; the table starts empty."""
    with sessions() as s:
        s.execute(delete(WorkerRecord))
        s.commit()

    def add(worker_id: str, queues: list[str], resources: dict, *, age_s: float = 0.0) -> None:
        with sessions() as s:
            s.add(WorkerRecord(id=worker_id, hostname="h", pid=1, queues=queues, resources=resources,
                               started_at=time.time() - age_s, last_heartbeat=time.time() - age_s))
            s.commit()

    yield add
    with sessions() as s:
        s.execute(delete(WorkerRecord))
        s.commit()


def route(sessions, *, config=LLAMA_7B, tuning: dict | None = None, training: dict | None = None, batch_size=4,
          task="causal_lm"):
    request = JobRequest(model="acme/base", training_file="file-x", tuning=tuning or {"type": "lora"},
                         training={"max_seq_length": 512, **(training or {})})
    with sessions() as s:
        return route_request(s, request=request, config=config, heartbeat_seconds=HEARTBEAT, task=task,
                             batch_size=batch_size)


def fleet(add) -> None:
    add("l4", ["train-24g", "prepare"], gpu("NVIDIA L4", 24))
    add("h100", ["train-80g"], gpu("NVIDIA H100", 80))
    add("cpu", ["train-cpu"], cpu(64))
    add("dead-b200", ["train-180g"], gpu("NVIDIA B200", 180), age_s=3600)  # no heartbeat for an hour
    add("publisher", ["publish", "prepare"], cpu(512))  # serves no training queue


def test_live_capacities_skip_dead_and_non_training_workers(sessions, workers):
    fleet(workers)
    with sessions() as s:
        caps = {c.worker_id: c for c in live_capacities(s, heartbeat_seconds=HEARTBEAT)}
    assert set(caps) == {"l4", "h100", "cpu"}
    assert caps["l4"].queues == ("train-24g",) and caps["l4"].gpu and caps["l4"].memory_bytes == 24 * GiB
    assert not caps["cpu"].gpu and caps["cpu"].memory_bytes == int(64 * GiB * CPU_RAM_SHARE)


def test_smallest_fitting_queue_wins_gpu_before_cpu(sessions, workers):
    fleet(workers)
    small = route(sessions, config=BERT_BASE, task="sequence_classification", batch_size=8)
    assert small.fits and small.queue == "train-24g"  # the 48 GiB CPU share also fits, but a GPU is preferred
    assert "train-24g" in small.reason and "NVIDIA L4" in small.reason

    # LoRA on a 7B model in bf16 needs about 50 GiB: too big for the L4 and the CPU share, fits the H100.
    lora = route(sessions)
    assert lora.fits and lora.queue == "train-80g", lora.reason
    assert 24 * GiB < lora.estimate.total_bytes <= 80 * GiB
    assert lora.estimate.precision == "bf16"

    # 4-bit with gradient checkpointing fits the L4 (about 7 GiB).
    qlora = route(sessions, tuning={"type": "qlora"}, training={"gradient_checkpointing": True})
    assert qlora.fits and qlora.queue == "train-24g" and qlora.estimate.precision == "4bit"


def test_a_queue_fits_only_when_every_live_worker_serving_it_fits(sessions, workers):
    workers("h100", ["shared"], gpu("NVIDIA H100", 80))
    workers("l4", ["shared"], gpu("NVIDIA L4", 24))
    workers("a100", ["big"], gpu("NVIDIA A100", 80))
    r = route(sessions)
    assert r.queue == "big", r.reason


def test_cpu_workers_train_in_float32_and_never_take_qlora(sessions, workers):
    workers("cpu", ["train"], cpu(64))
    r = route(sessions, config=BERT_BASE, task="sequence_classification", batch_size=8)
    assert r.fits and r.queue == "train" and r.estimate.precision == "fp32"
    q = route(sessions, tuning={"type": "qlora"})
    assert not q.fits and q.queue is None
    assert "qlora needs a CUDA GPU" in q.reason


def test_multi_gpu_jobs_need_workers_with_that_many_gpus(sessions, workers):
    workers("one", ["single"], gpu("NVIDIA H100", 80))
    workers("four", ["quad"], gpu("NVIDIA L4", 24, n=4))
    r = route(sessions, tuning={"type": "qlora"}, training={"n_gpus": 2, "gradient_checkpointing": True})
    assert r.fits and r.queue == "quad"


def test_full_fine_tune_that_fits_nowhere_is_refused_with_what_would_fit(sessions, workers):
    fleet(workers)
    r = route(sessions, tuning={"type": "full"})
    assert not r.fits and r.queue is None
    assert "no live worker can fit this job" in r.reason and "train-80g" in r.reason
    by_change = {(s.param, s.value): s for s in r.suggestions}
    assert ("tuning.type", "lora") in by_change and ("tuning.type", "qlora") in by_change
    assert by_change[("tuning.type", "qlora")].queue == "train-80g"  # about 25 GiB without checkpointing
    assert r.param == "tuning.type"
    # Every suggestion was estimated again and really fits its queue.
    lora = estimate(config=LLAMA_7B, tuning=Tuning(type="lora"), task="causal_lm", precision="bf16",
                    batch_size=4, seq_len=512)
    assert by_change[("tuning.type", "lora")].total_bytes == lora.total_bytes <= 80 * GiB
    assert 'tuning.type "lora"' in r.reason


def test_a_smaller_batch_or_checkpointing_is_suggested_when_it_suffices(sessions, workers):
    workers("l40", ["train"], gpu("NVIDIA L40S", 48))
    r = route(sessions, batch_size=16)  # LoRA 7B: weights 25 GiB plus activations for 16 x 512 tokens
    assert not r.fits
    params = [s.param for s in r.suggestions]
    assert params[:2] == ["training.gradient_checkpointing", "hyperparameters.batch_size"]
    batch = r.suggestions[1]
    assert 1 <= batch.value < 16 and batch.total_bytes <= 48 * GiB
    assert r.param == "training.gradient_checkpointing"


def test_nothing_registered_falls_back_to_the_default_queue(sessions, workers):
    workers("dead", ["train-80g"], gpu("NVIDIA H100", 80), age_s=3600)
    r = route(sessions)
    assert r.fallback and r.queue == "train" and not r.fits
    assert "no live worker" in r.reason
