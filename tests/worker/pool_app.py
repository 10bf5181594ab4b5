"""A Celery app for tests/worker/test_pool.py: one task that says which process ran it and when."""

from __future__ import annotations

import os
import signal
import threading
import time

from celery import Celery

# The worker process reads its settings from the environment; the test process sets them on the app.
_broker = os.environ.get("POOL_TEST_BROKER")
app = Celery("pool_test", broker=_broker, backend=_broker)
app.conf.update(worker_pool=os.environ.get("POOL_TEST_POOL", "prefork"),
                task_default_queue=os.environ.get("POOL_TEST_QUEUE", "pool-test"),
                worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)
if os.environ.get("POOL_TEST_BOUNDED"):
    import worker.shutdown  # noqa: F401  (hubtune's bounded shutdown, as worker/app.py imports it)


_held: list = []


@app.task(name="pool_test.started")
def started() -> dict:
    at = time.time()
    # Like a training task process: threads and a large heap. Its exit then takes long enough, after its
    # sentinel pipe closes, for the stock pool to miss it.
    for _ in range(4):
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    _held.append(b"\x01" * (256 << 20))
    return {"pid": os.getpid(), "at": at}


@app.task(name="pool_test.hold")
def hold(seconds: float, mark: str) -> int:
    """Busy for `seconds` (as a training step loop is): the process a shutdown test finds mid-task.
    Writes its pid to the file `mark` when it starts."""
    with open(mark, "w") as out:
        out.write(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return os.getpid()


@app.task(name="pool_test.stuck")
def stuck(mark: str) -> None:
    """A task process that SIGTERM cannot stop, as one stuck in a driver call or on a lock that a killed
    sibling held. Writes its pid to the file `mark` once it is stuck."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    with open(mark, "w") as out:
        out.write(str(os.getpid()))
    while True:
        time.sleep(1)
