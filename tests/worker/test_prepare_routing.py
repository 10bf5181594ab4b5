"""prepare routes a job by its memory estimate, in-process on a tmp SQLite database and local hub:
to the queue of a live worker that fits, to the default queue when no worker registered, and a job that
no live worker fits fails with what would fit."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from hubtune.estimator import estimate
from hubtune.migrate import upgrade
from hubtune.models import Job, JobEvent, WorkerRecord
from hubtune.settings import get_settings
from hubtune.spec import Tuning
from plugin import LocalHub
from testkit.tiny_models import write_chat_jsonl
from tests.server.apitest_helpers import auth, make_env, upload

MODEL = "acme/tiny-llama"
SEQ = 64  # packing: every sequence is max_seq_length long, so the test knows what prepare estimates
BATCH = 8


@pytest.fixture
def stack(tmp_path, monkeypatch, tiny_llama):
    data = tmp_path / "data"
    url = f"sqlite:///{tmp_path / 'hubtune.db'}"
    upgrade(url)
    for name, value in {"DATA_DIR": str(data), "DATABASE_URL": url, "HUB_BACKEND": "local",
                        "HEARTBEAT_SECONDS": "5"}.items():
        monkeypatch.setenv(f"HUBTUNE_{name}", value)
    get_settings.cache_clear()
    LocalHub(get_settings().resolved_hub_dir).publish(MODEL, folder=tiny_llama, message="tiny llama", private=False)  # public: any key may read it
    env = make_env(url, data)
    key = env.key()
    file_id = upload(env.client, key, write_chat_jsonl(tmp_path / "chat.jsonl").read_bytes())["id"]

    def submit(tuning: str, batch_size: int = BATCH) -> str:
        body = {"model": MODEL, "training_file": file_id, "tuning": {"type": tuning},
                "hyperparameters": {"batch_size": batch_size}, "training": {"max_seq_length": SEQ, "packing": True}}
        r = env.client.post("/v1/fine_tuning/jobs", headers=auth(key), json=body)
        assert r.status_code == 200, r.text
        return r.json()["id"]

    yield env, submit
    get_settings.cache_clear()


def add_gpu_worker(env, *, memory_bytes: int, queue: str) -> None:
    with env.session() as s:
        s.add(WorkerRecord(id=f"w-{queue}", hostname="h", pid=1, queues=["prepare", queue], last_heartbeat=time.time(),
                           resources={"cpu_count": 4, "ram_bytes": 8 << 30,
                                      "gpus": [{"name": "Tiny GPU", "memory_bytes": memory_bytes}]}))
        s.commit()


def prepared(env, job_id: str) -> tuple[Job, list[JobEvent]]:
    from worker.prepare import run_prepare

    run_prepare(job_id, get_settings())
    with env.session() as s:
        job = s.get(Job, job_id)
        events = s.execute(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).scalars().all()
        return job, list(events)


def expected(tiny_llama, tuning: str, batch_size: int = BATCH) -> int:
    config = json.loads((tiny_llama / "config.json").read_text())
    return estimate(config=config, tuning=Tuning(type=tuning), task="causal_lm", precision="bf16",
                    batch_size=batch_size, seq_len=SEQ).total_bytes


def test_job_goes_to_the_queue_of_a_worker_that_fits(stack, tiny_llama):
    env, submit = stack
    add_gpu_worker(env, memory_bytes=expected(tiny_llama, "lora") + (1 << 20), queue="gpu-small")
    add_gpu_worker(env, memory_bytes=80 << 30, queue="gpu-big")
    job, events = prepared(env, submit("lora"))
    assert job.status == "queued", job.error
    assert job.queue == "gpu-small"
    routed = [e for e in events if e.message.startswith("Routed to queue 'gpu-small'")]
    assert routed and routed[0].data["estimate"]["total_bytes"] == expected(tiny_llama, "lora")
    assert "Tiny GPU" in routed[0].message
    assert env.doorbells()[-1][2] == "gpu-small"  # the train doorbell rang on that queue


def test_without_any_worker_the_job_waits_on_the_default_queue_with_a_warning(stack):
    env, submit = stack
    job, events = prepared(env, submit("lora"))
    assert job.status == "queued" and job.queue == "train"
    warning = [e for e in events if e.level == "warn" and "no live worker" in e.message]
    assert warning, [e.message for e in events]


def test_a_full_fine_tune_no_worker_fits_fails_naming_lora(stack, tiny_llama):
    env, submit = stack
    # Batch size 1: no smaller batch to suggest; LoRA's frozen base needs no gradients or AdamW states.
    lora, full = expected(tiny_llama, "lora", 1), expected(tiny_llama, "full", 1)
    assert lora < full
    add_gpu_worker(env, memory_bytes=(lora + full) // 2, queue="gpu-small")
    job, _ = prepared(env, submit("full", batch_size=1))
    assert job.status == "failed"
    assert job.error["code"] == "no_worker_fits" and job.error["param"] == "tuning.type"
    assert 'tuning.type "lora"' in job.error["message"] and "gpu-small" in job.error["message"]


def test_a_batch_too_big_for_every_worker_fails_naming_the_batch_that_fits(stack, tiny_llama):
    env, submit = stack
    config = json.loads((tiny_llama / "config.json").read_text())
    half = estimate(config=config, tuning=Tuning(type="lora"), task="causal_lm", precision="bf16",
                    batch_size=BATCH // 2, seq_len=SEQ, gradient_checkpointing=True).total_bytes
    add_gpu_worker(env, memory_bytes=(half + expected(tiny_llama, "lora")) // 2, queue="gpu-small")
    job, _ = prepared(env, submit("lora"))
    assert job.status == "failed"
    assert job.error["code"] == "no_worker_fits"
    assert f"hyperparameters.batch_size {BATCH // 2}" in job.error["message"]
    assert job.error["param"] in ("hyperparameters.batch_size", "training.gradient_checkpointing")
