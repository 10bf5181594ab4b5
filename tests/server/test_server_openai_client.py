"""The official `openai` client, unmodified, against a real uvicorn server on PostgreSQL; and the
prepare doorbell on a real Redis broker."""

from __future__ import annotations

import json
import secrets

import openai
import pytest

from hubtune.keys import create_key
from hubtune.models import Checkpoint, now
from hubtune.queue import PREPARE
from tests.server.apitest_helpers import TRAIN_JSONL, auth, decode_message, make_env, upload

EXTRA = {
    "task": "sequence_classification",
    "tuning": {"type": "lora", "r": 8, "alpha": 16.0, "dropout": 0.05, "target_modules": "auto"},
    "training": {"learning_rate": 0.0002, "max_seq_length": 256},
    "hub": {"repo_id": "acme/tickets-minilm-lora", "private": True, "branch": "main"},
}


def test_openai_client_end_to_end(live_server, tmp_path):
    env, base_url = live_server
    with env.session() as s:  # granted acme: EXTRA's hub.repo_id is in that namespace
        key = create_key(s, owner=f"owner-{secrets.token_hex(4)}", namespaces=["acme"])
        s.commit()
    other_key = env.key()
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)

    train = tmp_path / "train.jsonl"
    train.write_bytes(TRAIN_JSONL)
    with train.open("rb") as fh:
        f = client.files.create(file=fh, purpose="fine-tune")
    assert f.id.startswith("file-") and f.bytes == len(TRAIN_JSONL) and f.status == "processed"
    assert client.files.retrieve(f.id).filename == "train.jsonl"
    assert client.files.content(f.id).read() == TRAIN_JSONL
    assert f.id in [x.id for x in client.files.list()]

    job = client.fine_tuning.jobs.create(
        model="sentence-transformers/all-MiniLM-L6-v2",
        training_file=f.id,
        suffix="tickets",
        seed=42,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        extra_body=EXTRA,
    )
    assert job.status == "validating_files" and job.seed == 42 and job.training_file == f.id
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == "auto"
    assert job.method.type == "supervised"
    extras = job.model_extra or {}
    for name, value in EXTRA.items():
        got = extras[name]
        # Echoed as accepted: what was sent, plus the defaults of the fields not sent.
        assert (got if isinstance(got, str) else {k: got[k] for k in value}) == value, name
    assert env.doorbells() == [(PREPARE, [job.id], "prepare")]

    got = client.fine_tuning.jobs.retrieve(job.id)
    assert got.id == job.id and got.model == job.model and {k: (got.model_extra or {})["hub"][k] for k in EXTRA["hub"]} == EXTRA["hub"]

    # Auto-pagination over more jobs than one page holds.
    more = [client.fine_tuning.jobs.create(model="org/model", training_file=f.id).id for _ in range(4)]
    first_page = client.fine_tuning.jobs.list(limit=2)
    assert len(first_page.data) == 2 and first_page.has_more
    listed = [j.id for j in client.fine_tuning.jobs.list(limit=2)]
    assert listed == (more[::-1] + [job.id])

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=1))
    assert [e.message for e in events] == ["Created fine-tuning job"]
    assert events[0].object == "fine_tuning.job.event" and events[0].level == "info"

    with env.session() as s:
        for step in (3, 6, 9):
            s.add(Checkpoint(job_id=job.id, step=step, path=f"/ckpt/{step}",
                             metrics={"train_loss": 0.3, "valid_loss": 0.4}, created_at=now()))
        s.commit()
    ckpts = list(client.fine_tuning.jobs.checkpoints.list(job.id, limit=2))
    assert [c.step_number for c in ckpts] == [9, 6, 3]
    assert ckpts[0].fine_tuned_model_checkpoint == f"{job.id}:ckpt-step-9"
    assert ckpts[0].metrics.train_loss == 0.3 and ckpts[0].metrics.step == 9

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"

    # Errors arrive as the client's typed exceptions, with the OpenAI body.
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.jobs.create(model="org/m", training_file=f.id, extra_body={"tuning": {"rank": 4}})
    assert exc.value.param == "tuning.rank" and exc.value.code == "unknown_parameter"
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.jobs.create(
            model="org/m", training_file=f.id,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}},
        )
    assert exc.value.param == "method.supervised.hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.jobs.create(model="org/m", training_file="file-unknown")
    assert exc.value.param == "training_file" and exc.value.code == "file_not_found"
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.jobs.create(model="not a/valid model", training_file=f.id)
    assert exc.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-unknown")

    other = openai.OpenAI(base_url=base_url, api_key=other_key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        list(other.fine_tuning.jobs.list_events(job.id))
    assert list(other.fine_tuning.jobs.list()) == []
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url, api_key="ht-nope", max_retries=0).files.list()

    deleted = client.files.delete(f.id)
    assert deleted.deleted is True and deleted.id == f.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_prepare_doorbell_on_redis(postgres_url, redis_url, tmp_path):
    """With a Redis broker in the app's settings, a create publishes one `hubtune.prepare` message
    carrying the job id, and a refused create publishes nothing."""
    import redis

    env = make_env(postgres_url, tmp_path / "data", broker_url=redis_url)
    broker = redis.Redis.from_url(redis_url)
    key = env.key()
    f = upload(env.client, key)

    bad = env.client.post("/v1/fine_tuning/jobs", headers=auth(key),
                          json={"model": "org/m", "training_file": "file-missing"})
    assert bad.status_code == 400
    assert broker.llen("prepare") == 0

    good = env.client.post("/v1/fine_tuning/jobs", headers=auth(key), json={"model": "org/m", "training_file": f["id"]})
    assert good.status_code == 200, good.text
    messages = [json.loads(m) for m in broker.lrange("prepare", 0, -1)]
    assert len(messages) == 1
    assert decode_message(messages[0])[:2] == (PREPARE, [good.json()["id"]])
    broker.close()
