"""Real Celery workers of tests/worker/pool_app.py on this run's Redis, each in a process group of its
own and stopped with all of its task processes at the end, also when the test failed."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from testkit.services import redis_url
from testkit.stack import stop_processes

REDIS_DB = 10  # a database of its own (other tests use 9 and 11-14)


@pytest.fixture
def pool_worker(tmp_path):
    """start(env=...) -> (the worker process, pool_app set up to send to it)."""
    started: list[tuple[subprocess.Popen, object]] = []

    def start(*, pool: str = "worker.pool:PromptTaskPool", env: dict[str, str] | None = None):
        broker = redis_url(REDIS_DB)
        queue = f"pool-test-{uuid.uuid4().hex[:8]}"
        log = open(tmp_path / f"worker-{len(started)}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.worker.pool_app", "worker", "--pool", "prefork",
             "--concurrency", "1", "--max-tasks-per-child", "1", "--queues", queue, "--without-gossip",
             "--without-mingle", "--loglevel", "INFO"],
            env={**os.environ, "POOL_TEST_BROKER": broker, "POOL_TEST_QUEUE": queue, "POOL_TEST_POOL": pool,
                 **(env or {})},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append((proc, log))
        from tests.worker import pool_app

        pool_app.app.conf.update(broker_url=broker, result_backend=broker, task_default_queue=queue)
        return proc, pool_app

    yield start
    stop_processes([proc for proc, _ in started])
    for i, (_, log) in enumerate(started):
        log.close()
        print((tmp_path / f"worker-{i}.log").read_text()[-3000:])


# The in-process tests (hub_world.py) reach the hub-compatible test server: never a developer's saved
# token, never Xet; imported here so that it is autouse for this folder too.
from tests.plugin.conftest import _isolated_hf_client  # noqa: E402,F401
# prepare's routing and estimate tests pull these tiny models from a local hub.
from tests.engine.conftest import tiny_bert, tiny_llama  # noqa: E402,F401
