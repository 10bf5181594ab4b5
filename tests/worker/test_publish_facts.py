"""The model card's worker and training time come from the events' data, not from their text."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from hubtune.db import engine_for
from hubtune.ids import new_id
from hubtune.lifecycle import Stage, Status, add_event, claim, hand_over
from hubtune.migrate import upgrade
from hubtune.models import Job, JobEvent


@pytest.fixture
def sessions(tmp_path):
    url = f"sqlite:///{tmp_path / 'facts.db'}"
    upgrade(url)
    yield sessionmaker(bind=engine_for(url), expire_on_commit=False)
    engine_for(url).dispose()


def _events(sessions, job_id):
    with sessions() as s:
        return s.execute(select(JobEvent.created_at, JobEvent.type, JobEvent.message, JobEvent.data)
                         .where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()


def test_worker_and_training_time_are_read_from_event_data(sessions):
    from worker.publish import _training_seconds, _training_worker

    job_id = new_id("ftjob")
    with sessions.begin() as s:
        s.add(Job(id=job_id, owner="alice", status=Status.QUEUED.value, model="org/m", training_file="f", seed=1,
                  spec={}))
    with sessions.begin() as s:
        token = claim(s, job_id, owner="gpu-box-1", lease_seconds=30)
        # A log line that merely reads like a claim does not count.
        add_event(s, job_id, "Fine-tuning job started on someone-else")
    with sessions.begin() as s:
        hand_over(s, job_id, token=token, stage=Stage.PUBLISHING, message="Trained", data={"steps": 3})
    events = _events(sessions, job_id)
    assert _training_worker(events) == "gpu-box-1"
    claimed, handed = events[0], events[-1]
    assert claimed.message == "Fine-tuning job started on gpu-box-1"  # the text users see is unchanged
    assert handed.data == {"steps": 3, "handed_to": "publishing"}
    assert _training_seconds(events) == pytest.approx(handed.created_at - claimed.created_at)
    assert _training_seconds(events[:1]) is None  # not trained to the end: no time on the card
