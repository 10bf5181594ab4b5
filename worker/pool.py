"""Celery's prefork pool, with an exited task process replaced at once.

A task process's exit closes its sentinel pipe a moment before the kernel lets the parent reap it.
Celery's pool looks for exited processes when the sentinel closes; in that moment it finds none, stops
watching, and the replacement waits for the pool's 5-second timer (celery/celery#9588). With
max_tasks_per_child=1 that delay fell on the next job: a training worker started jobs 2-5 s late.
"""

from __future__ import annotations

import time

from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool

# How long the parent waits for a closed sentinel's process to become reapable (it takes milliseconds).
REAP_WAIT_SECONDS = 1.0


class PromptAsynPool(AsynPool):
    def _event_process_exit(self, hub, proc):
        popen = proc._popen
        deadline = time.monotonic() + REAP_WAIT_SECONDS
        while popen is not None and popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        super()._event_process_exit(hub, proc)


class PromptTaskPool(TaskPool):
    Pool = PromptAsynPool
