"""Issue 6: a job is never lost, never trained twice at the same time, and resumes from its last
checkpoint. Each test injects a real fault into real processes: `hubtune server` (running the sweeper)
and `hubtune worker`s, over a PostgreSQL cluster and a redis-server of this module's own on spare
loopback ports (so restarting them disturbs nobody else)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time

import pytest

from testkit import faults
from testkit.faults import TRAIN_STARTED, Lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("reliability"))
    try:
        yield lab.start()
    finally:
        lab.close()


@pytest.fixture(autouse=True)
def fresh_workers(lab):
    yield
    lab.stop_workers()  # every test starts its own workers; none outlives it


def _messages(lab, job_id) -> list[str]:
    return [e.message for e in lab.events(job_id)]


def _checkpoint_steps_on_disk(lab, job_id) -> list[int]:
    folder = lab.root / "data" / "storage" / "jobs" / job_id / "checkpoints"
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*"))


def test_sigkilled_worker_job_resumes_from_its_last_checkpoint(lab):
    out = faults.sigkill_mid_training(lab)
    job_id = out.jobs[0]
    job, messages = lab.job(job_id), _messages(lab, job_id)
    assert job.status == "succeeded", lab.stack.logs()
    assert out.lost == 0 and out.twice == 0 and job.attempts == 2
    assert any(re.fullmatch(r"Worker \S+ lost \(its lease expired\); re-queued, attempt 2 of 3", m) for m in messages)
    resumed = [m for m in messages if m.startswith("Resuming from checkpoint-")]
    assert len(resumed) == 1
    step = int(resumed[0].rsplit("-", 1)[1])
    assert step >= 10 and step % 10 == 0
    # Training goes on from the checkpoint's step: the resumed run's first step is the next one.
    events = lab.events(job_id)
    at = next(i for i, e in enumerate(events) if e.message == resumed[0])
    after = [e.data["step"] for e in events[at:] if e.type == "metrics" and "train_loss" in e.data]
    assert after[0] == step + 1 and after[-1] == 200
    assert sum(m.startswith("Training finished") for m in messages) == 1


def test_frozen_worker_is_fenced_out_after_a_takeover(lab):
    out = faults.sigstop_past_lease(lab)
    job_id = out.jobs[0]
    job, messages = lab.job(job_id), _messages(lab, job_id)
    assert job.status == "succeeded" and out.lost == 0, lab.stack.logs()
    # One training at a time: metrics never interleave, one training finished, two claims in all.
    assert out.twice == 0 and job.attempts == 2
    assert sum(m.startswith(TRAIN_STARTED) for m in messages) == 2
    # The woken worker stopped without writing: no stop-step checkpoint of its own in the job's folder.
    assert all(s % 10 == 0 or s == 200 for s in _checkpoint_steps_on_disk(lab, job_id))
    steps = [r.step for r in lab.sql("SELECT step FROM checkpoints WHERE job_id = :id ORDER BY id", id=job_id)]
    assert all(s % 10 == 0 or s == 200 for s in steps)
    frozen_log = (lab.root / f"{out.frozen}.log").read_text()
    assert f"job {job_id}: training stopped" in frozen_log, frozen_log[-3000:]
    assert lab.workers[out.frozen].poll() is None  # alive and free for the next job


def test_a_worker_that_keeps_dying_fails_the_job_with_worker_lost(lab):
    out = faults.keeps_dying(lab, attempts=2)
    job = lab.job(out.jobs[0])
    assert job.status == "failed" and job.attempts == 2
    assert job.error["code"] == "worker_lost" and job.error["param"] is None
    assert "attempt 2 of 2" in job.error["message"]


def test_redis_restarted_empty_with_jobs_queued_loses_nothing(lab):
    out = faults.redis_restart_with_jobs_queued(lab)
    assert out.lost == 0 and out.twice == 0, lab.stack.logs()
    assert all(lab.job(j).attempts == 1 for j in out.jobs)


def test_postgres_restart_mid_job_is_ridden_out(lab):
    out = faults.postgres_restart_mid_job(lab)
    job = lab.job(out.jobs[0])
    assert job.status == "succeeded" and out.twice == 0, lab.stack.logs()
    # The blip is shorter than the lease: the same worker carried on, no re-queue.
    assert job.attempts == 1
    with lab.client() as client:  # the server reconnected too
        assert client.get(f"/fine_tuning/jobs/{job.id}").json()["status"] == "succeeded"


def test_server_restart_mid_job_loses_nothing(lab):
    out = faults.server_restart_mid_job(lab)
    assert out.lost == 0 and out.twice == 0, lab.stack.logs()
    assert [lab.job(j).attempts for j in out.jobs] == [1, 1]


def test_the_same_train_message_delivered_twice_trains_once(lab):
    out = faults.duplicate_train_message(lab, copies=2)
    job = lab.job(out.jobs[0])
    assert job.status == "succeeded" and out.twice == 0
    assert job.attempts == 1
    assert sum(m.startswith(TRAIN_STARTED) for m in _messages(lab, job.id)) == 1


def test_priority_then_owner_limit_order_the_claims(lab):
    jobs = faults.priority_and_owner_limit(lab)
    assert {j.status for j in jobs.values()} == {"succeeded"}
    # alice's priority-9 job first, then bob's (alice is at her limit of one running job), and alice's
    # priority-5 job only once her first left the running state.
    assert jobs["a_high"].started_at <= jobs["bob"].started_at < jobs["a_low"].started_at
    assert jobs["a_low"].started_at >= jobs["a_high"].finished_at
    assert all(j.attempts == 1 for j in jobs.values())


def test_pause_records_the_checkpoint_frees_the_worker_and_resume_continues(lab):
    lab.worker("w1")
    # No periodic checkpoint (save_steps past the end): the one checkpoint before resume is pause's.
    job_id = lab.create_job(max_steps=400, save_steps=1000)
    with lab.client() as client:
        faults._wait(lambda: max(lab.steps(job_id), default=0) >= 4, 180, "training")
        asked = time.time()
        assert client.post(f"/fine_tuning/jobs/{job_id}/pause").json()["status"] == "paused"
        paused_at = max(lab.steps(job_id))
        faults._wait(lambda: f"job {job_id}: training stopped" in (lab.root / "w1.log").read_text(), 60,
                     "the worker to stop")
        checkpoints = client.get(f"/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
        assert len(checkpoints) == 1, checkpoints  # recorded, and listed, although the job is paused
        stop_step = checkpoints[0]["step_number"]
        # Stopped at the next step: the checkpoint came at once, and no step after it was trained.
        saved = lab.sql("SELECT created_at FROM checkpoints WHERE job_id = :id", id=job_id)[0].created_at
        assert paused_at <= stop_step < 400 and saved - asked < 5
        # The worker is free: another job runs to the end while this one is paused.
        other = lab.create_job("bob", max_steps=6, save_steps=3)
        assert lab.wait_status(other, {"succeeded", "failed"}).status == "succeeded"
        assert lab.job(job_id).status == "paused" and max(lab.steps(job_id)) <= stop_step
        # queued, or already claimed by the idle worker by the time the answer is written
        assert client.post(f"/fine_tuning/jobs/{job_id}/resume").json()["status"] in {"queued", "running"}
        job = lab.wait_status(job_id, {"succeeded", "failed"})
    assert job.status == "succeeded", lab.stack.logs()
    messages = _messages(lab, job_id)
    assert f"Resuming from checkpoint-{stop_step}" in messages
    events = lab.events(job_id)
    at = messages.index(f"Resuming from checkpoint-{stop_step}")
    before = [e.data["step"] for e in events[:at] if e.type == "metrics" and "train_loss" in e.data]
    after = [e.data["step"] for e in events[at:] if e.type == "metrics" and "train_loss" in e.data]
    assert max(before) <= stop_step
    assert after[0] == stop_step + 1 and after[-1] == 400  # the step count did not restart at 0
    assert not lab.trained_twice(job_id)


def test_worker_short_of_disk_takes_no_job_until_space_is_freed(lab):
    """A worker whose data dir fills stops consuming its queues (worker/disk_guard.py): the job's doorbells
    wait in the broker for another worker instead of being taken and declined (which cost a sweep each,
    60 s by default), and once space is freed the worker takes jobs again. The data dir's free space is
    set against a threshold of this worker's own, so the test needs neither root nor a small disk."""
    data, log = lab.root / "data", lab.stack.root / "full.log"
    seen = log.stat().st_size if log.exists() else 0

    def logged(text: str) -> bool:
        return log.exists() and text in log.read_text()[seen:]

    threshold = shutil.disk_usage(data).free - (1 << 30)
    lab.worker("full", env={"HUBTUNE_MIN_FREE_DISK_BYTES": str(threshold)})
    filler = lab.root / "filler"
    with open(filler, "wb") as f:  # 3 GiB really allocated: the data dir has 2 GiB less than the threshold
        os.posix_fallocate(f.fileno(), 0, 3 << 30)
    try:
        faults._wait(lambda: logged("taking no jobs from"), 90, "the guard to stop the full worker's consumers")
        job_id = lab.create_job(max_steps=20)
        time.sleep(6)  # the full worker alone: nobody may take the job's first doorbell (prepare)
        assert lab.job(job_id).status == "validating_files", lab.stack.logs()
        lab.worker("b")  # a worker with room takes it from the broker
        assert lab.wait_status(job_id, {"succeeded", "failed"}).status == "succeeded"
        # The full worker received no message at all (Celery logs "Task hubtune.<task>[id] received"), so
        # it never took a doorbell it had to decline ("... bytes free; taking no job").
        assert not logged("] received") and not logged("bytes free; taking no job"), lab.stack.logs()
    finally:
        filler.unlink()
    faults._wait(lambda: logged("data dir has room again"), 30, "the guard to resume the full worker's consumers")
    lab.signal_worker("b", signal.SIGKILL)
    second = lab.create_job(max_steps=20)  # only the once-full worker is left: it trains the job
    assert lab.wait_status(second, {"succeeded", "failed"}).status == "succeeded"
    assert sum(m.startswith("Fine-tuning job started") for m in _messages(lab, second)) == 1
    assert logged("] received")  # the marker checked above is one this worker's log does write
