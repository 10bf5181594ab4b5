"""`hubtune sweeper --once` is a real command that recovers a job of a dead worker (embedded SQLite and
file-system queue here; the fault tests cover the sweeper thread of `hubtune server`)."""

from __future__ import annotations

import os
import subprocess

from sqlalchemy import create_engine, text

from hubtune.migrate import upgrade
from testkit.stack import hubtune_cmd


def test_sweeper_once_requeues_an_expired_lease_and_rings_train(tmp_path):
    url = f"sqlite:///{tmp_path / 'hubtune.db'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO jobs (id, owner, status, stage, model, training_file, seed, spec, queue, priority, attempts,"
            " max_attempts, lease_owner, lease_token, lease_expires_at, created_at, updated_at)"
            " VALUES ('ftjob-dead', 'alice', 'running', 'training', 'org/m', 'file-x', 1, '{}', 'gpu-a', 0, 1, 3,"
            " 'host:1', 7, 1.0, 1.0, 1.0)"))
    env = {**os.environ, "HUBTUNE_DATA_DIR": str(tmp_path), "HUBTUNE_DATABASE_URL": url, "HUBTUNE_BROKER_URL": ""}
    out = subprocess.run(hubtune_cmd("sweeper", "--once"), env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "re-queued 1, failed 0" in out.stdout
    with engine.begin() as conn:
        job = conn.execute(text("SELECT status, lease_owner, lease_token FROM jobs WHERE id = 'ftjob-dead'")).one()
        events = conn.execute(text("SELECT message FROM job_events WHERE job_id = 'ftjob-dead'")).scalars().all()
    assert (job.status, job.lease_owner, job.lease_token) == ("queued", None, 8)
    assert events == ["Worker host:1 lost (its lease expired); re-queued, attempt 2 of 3"]
    # The train doorbell went to the job's own queue.
    messages = list((tmp_path / "queue" / "messages").glob("*"))
    assert len(messages) == 1 and '"gpu-a"' in messages[0].read_text()
    engine.dispose()
