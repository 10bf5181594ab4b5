"""A worker frozen (SIGSTOP) in the middle of a transaction must not keep its job from being taken over.

Its fenced UPDATE (a heartbeat, a metrics flush, a checkpoint) locks the job row until the transaction
ends, and a frozen process never ends it: the sweeper's re-queue waited on that lock for ever
(bench.faults' frozen-worker scenario stalled so). session_scope() transactions are therefore ended by
PostgreSQL once idle for longer than the lease margin (hubtune/db.py)."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker

from hubtune.db import engine_for, idle_transaction_limit_ms, session_scope
from hubtune.ids import new_id
from hubtune.lifecycle import LeaseLost, Status, claim, heartbeat
from hubtune.models import Job
from testkit.services import postgres_database
from worker.lease import Lease, is_transient

LEASE_SECONDS, HEARTBEAT_SECONDS = 2.0, 0.5  # the lease margin, and so the idle limit: 1.5 s


@pytest.fixture
def pg(tmp_path, monkeypatch):
    from hubtune.queue import get_celery
    from hubtune.settings import get_settings

    with postgres_database("hubtune_frozen") as url:
        monkeypatch.setenv("HUBTUNE_DATABASE_URL", url)
        monkeypatch.setenv("HUBTUNE_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("HUBTUNE_BROKER_URL", "")  # a file-system broker: the sweeper's doorbell lands there
        monkeypatch.setenv("HUBTUNE_LEASE_SECONDS", str(LEASE_SECONDS))
        monkeypatch.setenv("HUBTUNE_HEARTBEAT_SECONDS", str(HEARTBEAT_SECONDS))
        get_settings.cache_clear(), get_celery.cache_clear()
        try:
            yield get_settings()
        finally:
            get_settings.cache_clear(), get_celery.cache_clear()


def _running_job(lease_seconds: float) -> tuple[str, int]:
    job_id = new_id("ftjob")
    with session_scope() as s:
        s.add(Job(id=job_id, owner="alice", status=Status.QUEUED.value, model="org/m", training_file="file-x",
                  seed=1, spec={}, queue="train"))
    with session_scope() as s:
        token = claim(s, job_id, owner="w1", lease_seconds=lease_seconds)
    assert token is not None
    return job_id, token


def test_the_idle_limit_is_the_lease_margin_and_only_session_scope_has_it(pg):
    assert idle_transaction_limit_ms() == 1500
    with session_scope() as s:
        assert s.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "1500ms"
    # Other sessions (the API's, one per request) keep the server's setting, and so does the pooled
    # connection once the bounded transaction ended (SET LOCAL).
    with sessionmaker(bind=engine_for(pg.resolved_database_url))() as s:
        assert s.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one() != "1500ms"


def test_a_holder_frozen_inside_its_fenced_write_does_not_block_the_takeover(pg):
    from hubtune.sweeper import sweep

    job_id, token = _running_job(lease_seconds=1.0)
    locked, wake = threading.Event(), threading.Event()
    frozen: dict = {}

    def holder() -> None:
        # The worker's heartbeat thread, frozen between its fenced UPDATE and the COMMIT.
        try:
            with session_scope() as s:
                heartbeat(s, job_id, token=token, lease_seconds=LEASE_SECONDS)
                locked.set()
                wake.wait(30)  # SIGCONT
        except Exception as exc:  # noqa: BLE001 - what the woken worker sees
            frozen["error"] = exc

    threading.Thread(target=holder, daemon=True).start()
    assert locked.wait(10)
    time.sleep(1.2)  # the committed lease (1 s) has expired; the frozen holder's extension never commits
    done: dict = {}
    sweeper = threading.Thread(target=lambda: done.update(report=sweep(pg)), daemon=True)
    started = time.monotonic()
    sweeper.start()
    sweeper.join(15)
    waited = time.monotonic() - started
    wake.set()  # without the limit the sweeper only gets the row once the holder commits
    try:
        assert "report" in done, "the sweeper waited on the frozen holder's row lock"
        assert done["report"].requeued == [job_id]
        assert waited < 5  # the idle limit (1.5 s after the holder's last statement), not the freeze
    finally:
        sweeper.join(15)
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job.status == Status.QUEUED.value and job.lease_token == token + 1
        assert claim(s, job_id, owner="w2", lease_seconds=LEASE_SECONDS) is not None  # the takeover
    # The woken holder's transaction was ended by the server: its write is gone, and what it sees is a
    # lost connection (InternalError, SQLSTATE 25P03), which the lease treats as it treats any: retried
    # while the lease is surely still its own, else LeaseLost, and the worker stops.
    deadline = time.monotonic() + 10
    while "error" not in frozen and time.monotonic() < deadline:
        time.sleep(0.05)
    error = frozen.get("error")
    assert isinstance(error, DBAPIError) and is_transient(error), repr(error)
    lease = Lease(job_id, token, lease_seconds=LEASE_SECONDS, heartbeat_seconds=HEARTBEAT_SECONDS)
    lease._confirmed -= 60  # woken long after its last confirmation

    def woken_write() -> None:
        raise error

    with pytest.raises(LeaseLost):
        lease.retrying(woken_write)


def test_the_woken_worker_stops_when_its_statement_is_the_one_refused(pg):
    # A worker frozen mid-transaction whose next statement (not its COMMIT) meets the ended session, as
    # a checkpoint's INSERT did in tests/reliability/test_faults.py: the lease sees a lost connection too.
    job_id, token = _running_job(lease_seconds=LEASE_SECONDS)
    with pytest.raises(DBAPIError) as raised:
        with session_scope() as s:
            heartbeat(s, job_id, token=token, lease_seconds=LEASE_SECONDS)
            time.sleep(idle_transaction_limit_ms() / 1000 + 1)
            s.execute(text("SELECT 1"))
    assert is_transient(raised.value), repr(raised.value)
    with session_scope() as s:  # the pool hands out a live connection again, and the heartbeat never landed
        assert s.get(Job, job_id).heartbeat_at < time.time() - 1
