"""A warm worker: the worker's main process imports the training stack before it forks its task
processes, and freezes those imports out of the cyclic GC (worker.engine.runtime says why).

Task processes inherit both through fork: a job neither imports torch nor pays a full collection of
it, and a task process that replaces a dead one (or one recycled by max_tasks_per_child) is warm at
once. Only imports happen in the main process, no torch computation: OpenMP's thread pool must not
exist before a fork, and CUDA is never initialised there.
"""

from __future__ import annotations

import logging
import time

from celery import signals

from hubtune.queue import settings_of

log = logging.getLogger(__name__)


def warm_up() -> None:
    """Import what a job needs, then freeze it. A worker without torch (a publish-only image) stays
    cold rather than failing: its tasks import what they need when they run."""
    started = time.monotonic()
    try:
        from worker.engine.runtime import freeze_imports, load_training_stack

        load_training_stack()
        import hubtune.estimator  # noqa: F401
        import hubtune.routing  # noqa: F401
        import worker.engine.tokenizers  # noqa: F401
        import worker.prepare  # noqa: F401
        import worker.publish  # noqa: F401
        import worker.train  # noqa: F401
    except ImportError as exc:
        log.warning("worker stays cold: %s", exc)
        return
    try:
        import matplotlib

        matplotlib.use("Agg")  # as publish does: no display on a worker
        import matplotlib.pyplot  # noqa: F401  (the model card's loss chart)
    except ImportError:
        pass
    frozen = freeze_imports()
    log.info("worker warm in %.1f s (%d objects frozen); task processes inherit it",
             time.monotonic() - started, frozen)


@signals.celeryd_after_setup.connect
def _warm_before_fork(instance, **_kwargs) -> None:
    # In the main process after logging is set up and before the pool's processes are forked; `instance`
    # is the worker, whose app carries the settings.
    if settings_of(instance.app).worker_preload:
        warm_up()
