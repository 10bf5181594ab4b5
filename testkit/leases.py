"""A job claimed by a worker on a fresh SQLite database, for tests of what a worker writes under its lease
(worker.hooks, worker.tracking): the settings point at that database while the context is open."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hubtune import settings as settings_module
from hubtune.db import engine_for, session_scope
from hubtune.lifecycle import Status, claim
from hubtune.migrate import upgrade
from hubtune.models import Job
from worker.lease import Lease


@contextmanager
def claimed_lease(folder: Path, monkeypatch, job_id: str) -> Iterator[Lease]:
    url = f"sqlite:///{folder / 'lease.db'}"
    upgrade(url)
    monkeypatch.setenv("HUBTUNE_DATABASE_URL", url)
    settings_module.get_settings.cache_clear()
    with session_scope() as s:
        s.add(Job(id=job_id, owner="o", status=Status.QUEUED.value, model="m", training_file="f", seed=1,
                  queue="train", spec={}, attempts=0, max_attempts=3, lease_token=0))
    with session_scope() as s:
        token = claim(s, job_id, owner="w", lease_seconds=60)
    try:
        yield Lease(job_id, token, lease_seconds=60, heartbeat_seconds=30)
    finally:
        engine_for(url).dispose()
        settings_module.get_settings.cache_clear()
