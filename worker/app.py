"""Entry point for `celery -A worker.app worker`: the shared Celery app with hubtune's tasks registered.

The app is made from the process settings and carries them (hubtune.queue.settings_of): the tasks and
the worker's signal handlers take theirs from it and pass them down, as the server's routes take theirs
from the server app, so the worker's modules never read the environment themselves."""

from hubtune.queue import get_celery

app = get_celery()
# Only the worker process uses the pool, so it is named here and not in hubtune.queue's shared settings.
app.conf.worker_pool = "worker.pool:PromptTaskPool"

import worker.tasks  # noqa: E402,F401  (registers the tasks on the app)
import worker.registry  # noqa: E402,F401  (registers the worker row on start-up)
import worker.warm  # noqa: E402,F401  (imports the training stack before the pool forks)
import worker.shutdown  # noqa: E402,F401  (bounds the shutdown: SIGTERM to the worker or its whole group)

from worker.disk_guard import DiskGuard  # noqa: E402

# A worker short of disk space stops consuming its queues until space is freed (worker/disk_guard.py).
app.steps["consumer"].add(DiskGuard)
