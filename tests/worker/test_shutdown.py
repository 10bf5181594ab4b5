"""A worker exits by worker/shutdown.py's deadline on SIGTERM, sent to it alone or to its whole process
group, even when a task process ignores the signal and Celery's warm shutdown would wait forever."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from testkit.stack import group_members, process_stat
from worker.shutdown import EXIT_DEADLINE_SECONDS, EXIT_FORCED


def _wait_for_file(path, proc, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the task did not start"
        time.sleep(0.1)
    return path.read_text()


@pytest.mark.parametrize("target", ["process", "group"])
def test_a_stuck_task_process_does_not_keep_its_worker_alive(pool_worker, tmp_path, target):
    proc, pool_app = pool_worker(env={"POOL_TEST_BOUNDED": "1"})
    mark = tmp_path / "stuck.pid"
    pool_app.stuck.delay(str(mark))
    task_pid = int(_wait_for_file(mark, proc))
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM) if target == "group" else os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=EXIT_DEADLINE_SECONDS + 10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker still running {EXIT_DEADLINE_SECONDS + 10:.0f} s after SIGTERM")
    took = time.monotonic() - sent
    assert proc.returncode == EXIT_FORCED and took >= EXIT_DEADLINE_SECONDS - 1, (proc.returncode, took)
    deadline = time.monotonic() + 3
    while (st := process_stat(task_pid)) and st["state"] != "Z" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (st and st["state"] != "Z"), "the stuck task process outlived its worker"
    assert not group_members(proc.pid)
