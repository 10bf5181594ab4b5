"""A worker whose data dir is short of space stops taking doorbells until space is freed.

Declining a doorbell in the task is not enough: the broker hands the next ring of the same job to the
same idle worker as often as not. In the disk-full fault scenario (bench/faults.py, 20 runs, 2026-12-06)
the full worker swallowed up to 4 rings of the job in a row while the other machine sat idle, one per
sweep (requeue_after_seconds: 3 s there, 60 s by default), and recovery took 7 to 71 s (median 15 s).

So the guard, a step of the worker's consumer, checks the free space every CHECK_SECONDS in the worker's
main process and cancels the consumers of all the worker's queues while it is short; it consumes them
again once space is back. It runs on the consumer's own timer, as Celery's remote control does, so it
touches the consumer from the thread that owns it.
"""

from __future__ import annotations

import logging

from celery import bootsteps

from hubtune.queue import settings_of
from worker.disk import short_of_space

log = logging.getLogger(__name__)
CHECK_SECONDS = 1.0  # one statvfs: cheap; bounds how many doorbells a worker that just filled may take


class DiskGuard(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs) -> None:
        super().__init__(parent, **kwargs)
        self.paused: list[str] = []  # the queues this guard stopped consuming
        self.timer = None

    def start(self, c) -> None:
        settings = settings_of(c.app)
        if settings.min_free_disk_bytes:
            self.timer = c.timer.call_repeatedly(CHECK_SECONDS, self.check, (c, settings), priority=10)

    def stop(self, c) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def check(self, c, settings) -> None:
        try:
            short = short_of_space(settings)
            if short and not self.paused:
                self.paused = sorted(c.app.amqp.queues.consume_from)
                for queue in self.paused:
                    c.cancel_task_queue(queue)
                log.warning("data dir %s has under %s bytes free: taking no jobs from %s until space is freed",
                            settings.data_dir, settings.min_free_disk_bytes, ", ".join(self.paused))
            elif not short and self.paused:
                for queue in self.paused:
                    c.add_task_queue(queue)
                log.warning("data dir has room again: taking jobs from %s", ", ".join(self.paused))
                self.paused = []
        except Exception:  # noqa: BLE001 - the guard must outlive a failed check; the next one tries again
            log.exception("disk guard check failed")
