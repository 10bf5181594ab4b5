"""A worker exits within a bounded time on SIGTERM, SIGINT or SIGQUIT, whether the signal reaches its
main process alone (`docker stop`, `kill PID`, `hubtune up` stopping) or its whole process group
(systemd's default KillMode=control-group, `kill -- -PGID`, Ctrl-C in a terminal).

Celery's warm shutdown waits for running tasks with no limit (a training job may run for hours), and it
can wait forever: when the same signal also reached the task processes, the main thread was seen
joining the pool's task-handler thread, itself waiting on a lock that a killed task process held. So
on the first shutdown signal the main process starts a watchdog thread that does not depend on the
pool's state:

- after TASK_GRACE_SECONDS, task processes still running get SIGTERM: billiard raises SystemExit in
  them and the task unwinds. A training job stops where it is; its lease expires and the sweeper
  re-queues it, to resume from its last checkpoint, as after a crash. A prepare or publish cut short
  is re-rung by the sweeper as well.
- at EXIT_DEADLINE_SECONDS, whatever is left of the pool is SIGKILLed and the main process leaves at
  once with EXIT_FORCED (its worker row then ages out of the live list).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from celery import signals

log = logging.getLogger(__name__)

TASK_GRACE_SECONDS = 5.0
EXIT_DEADLINE_SECONDS = 15.0
EXIT_FORCED = 1

_started = threading.Event()


def child_pids(parent: int | None = None) -> list[int]:
    """The live processes whose parent is `parent` (default: this process), from /proc."""
    parent = os.getpid() if parent is None else parent
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()  # the command name may hold spaces
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == parent and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _signal_children(sig: int) -> list[int]:
    pids = child_pids()
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


def _watch(grace: float, deadline: float) -> None:
    started = time.monotonic()
    time.sleep(grace)
    if _signal_children(signal.SIGTERM):
        log.warning("shutdown: tasks still running after %.0f s; stopping their processes", grace)
    time.sleep(max(deadline - (time.monotonic() - started), 0))
    left = _signal_children(signal.SIGKILL)
    log.error("shutdown: still running after %.0f s; killed %d task process(es) and exiting", deadline, len(left))
    logging.shutdown()
    os._exit(EXIT_FORCED)


def start_watchdog(*, grace: float = TASK_GRACE_SECONDS, deadline: float = EXIT_DEADLINE_SECONDS) -> None:
    """Bound this worker's shutdown (once; later signals change nothing)."""
    if _started.is_set():
        return
    _started.set()
    threading.Thread(target=_watch, args=(grace, deadline), name="shutdown-watchdog", daemon=True).start()


@signals.worker_shutting_down.connect
def _bound_shutdown(**_kwargs) -> None:
    # Sent in the main process from Celery's handler for SIGTERM, SIGINT and SIGQUIT.
    start_watchdog()
