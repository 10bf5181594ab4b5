"""QLoRA in compose.yaml's layout: prepare runs on the CPU worker, so it must not refuse a qlora job
because that machine has no CUDA. Where no worker can train it, the job still fails clearly: routing
refuses it when a live CPU training worker is all there is, and a CPU training worker that gets it
anyway (none was live at prepare, so it went to the default queue) fails it naming tuning.type."""

from __future__ import annotations

import time

import pytest

from testkit.tiny_models import make_tiny_bert, write_classification_jsonl
from testkit.faults import FAST
from testkit.services import redis_url
from testkit.stack import Stack, upload, wait_for

pytestmark = pytest.mark.e2e

REDIS_DB = 8  # a database of its own (tests/e2e/test_signals.py 9, tests/worker 10, the others 11-14)


def _start_worker(stack: Stack, name: str, queues: str) -> None:
    proc = stack.spawn(name, "worker", "--queues", queues, "--concurrency", "1", "--loglevel", "INFO")
    log = stack.root / f"{name}.log"
    deadline = time.monotonic() + 180
    while " ready." not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, f"worker did not start:\n{stack.logs()}"
        time.sleep(0.3)


def test_qlora_passes_prepare_on_a_cpu_worker_and_fails_clearly_where_it_cannot_train(tmp_path):
    stack = Stack(tmp_path, {"HUBTUNE_BROKER_URL": redis_url(REDIS_DB), "HUBTUNE_DATABASE_URL": "",
                             "HUBTUNE_HUB_BACKEND": "local", "HUBTUNE_HUB_DIR": "", **FAST})
    (tmp_path / "data").mkdir()
    try:
        stack.run("db", "upgrade")
        stack.run("hub", "import", str(make_tiny_bert(tmp_path / "tiny-bert")), "tiny/bert")
        stack.spawn("server", "server", "--port", str(stack.port), "--no-migrate")
        stack.wait_healthy(timeout=90)
        client = stack.client(stack.run("keys", "create", "--name", "alice").strip())
        train = upload(client, write_classification_jsonl(tmp_path / "t.jsonl", n=32))
        body = {"model": "tiny/bert", "training_file": train,
                "task": "sequence_classification", "tuning": {"type": "qlora"},
                "training": {"max_steps": 2, "max_seq_length": 32}}
        # compose.yaml's CPU worker alone: prepare passes, the job waits for a training worker.
        _start_worker(stack, "worker-cpu", "prepare,publish")
        first = client.post("/fine_tuning/jobs", json=body).json()["id"]
        job = wait_for(client, first, statuses={"queued", "failed"}, timeout=120, stack=stack)
        assert job["status"] == "queued", job["error"]
        # A CPU training worker takes it and fails it, naming the method's requirement.
        _start_worker(stack, "worker-train", "train")
        job = wait_for(client, first, timeout=120, stack=stack)
        assert job["status"] == "failed"
        assert job["error"]["code"] == "invalid_tuning" and job["error"]["param"] == "tuning.type"
        assert "qlora needs a CUDA GPU" in job["error"]["message"]
        # With that CPU training worker live, routing refuses the next qlora job at prepare.
        second = client.post("/fine_tuning/jobs", json=body).json()["id"]
        job = wait_for(client, second, timeout=120, stack=stack)
        assert job["status"] == "failed" and job["error"]["code"] == "no_worker_fits", job["error"]
    finally:
        stack.stop()
