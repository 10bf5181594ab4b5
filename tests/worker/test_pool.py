"""A training worker (max_tasks_per_child=1) replaces each task process at once, so the next job does
not wait: Celery's stock pool often left the replacement to its 5-second timer (worker/pool.py)."""

from __future__ import annotations

import time

import pytest

TASKS = 6


@pytest.fixture
def recycling_worker(pool_worker):
    _, pool_app = pool_worker()
    return pool_app


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
