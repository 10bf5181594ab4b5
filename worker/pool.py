"""Celery's prefork pool, with an exited task process replaced at once.

A task process's sentinel pipe closes while the process is still exiting (its other threads and its
memory still being torn down), a moment before the parent can reap it. Celery's pool looks for exited
processes only when the sentinel closes; in that moment it finds none, stops watching, and the
replacement waits for the pool's 5-second timer (celery/celery#9588). With max_tasks_per_child=1, as
on training workers, that delay fell on the next job: it started 2-5 s late.
"""

from __future__ import annotations

import time

from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool

# Look again this often until the process can be reaped (milliseconds on a CPU worker; a GPU driver's
# teardown can take longer), and give up after the pool's own timer would have caught it.
RETRY_SECONDS = 0.01
GIVE_UP_SECONDS = 5.0


class PromptAsynPool(AsynPool):
    def _event_process_exit(self, hub, proc):
        super()._event_process_exit(hub, proc)  # stops watching the sentinel, maintains the pool
        if proc.exitcode is None:
            # A timer, not a wait: the parent's event loop keeps serving the broker meanwhile.
            hub.call_later(RETRY_SECONDS, self._maintain_when_reapable, hub, proc, time.monotonic() + GIVE_UP_SECONDS)

    def _maintain_when_reapable(self, hub, proc, deadline: float) -> None:
        if proc.exitcode is not None:
            self.maintain_pool()
        elif time.monotonic() < deadline:
            hub.call_later(RETRY_SECONDS, self._maintain_when_reapable, hub, proc, deadline)


class PromptTaskPool(TaskPool):
    Pool = PromptAsynPool
