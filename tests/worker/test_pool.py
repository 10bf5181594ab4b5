"""A training worker (max_tasks_per_child=1) replaces each task process at once, so the next job does
not wait: Celery's stock pool often left the replacement to its 5-second timer (worker/pool.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.support.services import redis_url
from tests.support.stack import stop_processes

REDIS_DB = 10  # a database of its own (other tests use 11-14)

TASKS = 6


@pytest.fixture
def recycling_worker(tmp_path):
    broker = redis_url(REDIS_DB)
    queue = f"pool-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "POOL_TEST_BROKER": broker, "POOL_TEST_QUEUE": queue,
           "POOL_TEST_POOL": "worker.pool:PromptTaskPool"}
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.worker.pool_app", "worker", "--pool", "prefork",
         "--concurrency", "1", "--max-tasks-per-child", "1", "--queues", queue, "--without-gossip",
         "--without-mingle", "--loglevel", "INFO"], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    from tests.worker import pool_app

    pool_app.app.conf.update(broker_url=broker, result_backend=broker, task_default_queue=queue)
    try:
        yield pool_app
    finally:
        stop_processes([proc])  # the worker and its task processes, also when the test failed
        log.close()
        print((tmp_path / "worker.log").read_text()[-3000:])


def test_each_task_gets_a_fresh_process_without_waiting_for_the_pool_timer(recycling_worker):
    recycling_worker.started.delay().get(timeout=60)  # the worker is up
    waits, pids = [], set()
    for _ in range(TASKS):
        time.sleep(0.3)  # the previous task process has exited by now
        sent = time.time()
        ran = recycling_worker.started.delay().get(timeout=30)
        waits.append(ran["at"] - sent)
        pids.add(ran["pid"])
    assert len(pids) == TASKS  # a new process for every task
    # A replacement takes a fork (tens of ms); the stock pool's timer made most tasks wait 1-5 s.
    assert max(waits) < 1.5, [round(w, 2) for w in waits]
