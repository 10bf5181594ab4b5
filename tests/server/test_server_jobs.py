"""/v1/fine_tuning/jobs over the TestClient: create (echo, defaults, doorbell), list, retrieve, cancel,
pause/resume, events, checkpoints, and the fields the workers fill in."""

from __future__ import annotations

import pytest

from hubtune.lifecycle import Status
from hubtune.models import Checkpoint, Job, JobEvent, now
from hubtune.queue import PREPARE, TRAIN
from hubtune.spec import Hub, JobRequest, Tuning
from tests.server.apitest_helpers import assert_error, auth, create_job, upload

EXTRAS = {
    "task": "sequence_classification",
    "tuning": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["query", "value"]},
    "training": {"learning_rate": 0.0002, "max_seq_length": 128},
    "hub": {"repo_id": "acme/tickets-minilm-lora", "private": True, "branch": "main"},
}


def test_create_job_echoes_spec_and_rings_prepare(env):
    key = env.key("acme")
    f = upload(env.client, key)
    job = create_job(
        env.client, key, f["id"], suffix="tickets", seed=42, metadata={"team": "support"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}, **EXTRAS,
    )
    assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-")
    assert job["status"] == "validating_files"
    assert job["organization_id"] == "acme"
    assert job["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert job["training_file"] == f["id"] and job["validation_file"] is None
    assert job["seed"] == 42 and job["suffix"] == "tickets" and job["user_provided_suffix"] == "tickets"
    assert job["metadata"] == {"team": "support"}
    assert job["hyperparameters"] == {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": "auto"}
    assert job["method"] == {"type": "supervised", "supervised": {"hyperparameters": job["hyperparameters"]}}
    assert job["result_files"] == [] and job["integrations"] == []
    assert job["fine_tuned_model"] is None and job["finished_at"] is None and job["error"] is None
    assert isinstance(job["created_at"], int)
    # hubtune's own fields, echoed back exactly as accepted, defaults filled in.
    assert job["task"] == "sequence_classification"
    assert job["tuning"] == Tuning.model_validate(EXTRAS["tuning"]).model_dump(mode="json")
    assert job["tuning"]["alpha"] == 8.0 and job["tuning"]["target_modules"] == ["query", "value"]
    expected_training = JobRequest.model_validate(
        {"model": "m", "training_file": "f", "training": EXTRAS["training"]}
    ).training.model_dump(mode="json")
    assert job["training"] == expected_training and job["training"]["learning_rate"] == 0.0002
    assert job["hub"] == Hub.model_validate(EXTRAS["hub"]).model_dump(mode="json")
    assert job["stage"] is None and job["queue"] is None and job["attempts"] == 0

    # The stored spec is the whole request with defaults (and the seed), readable by the worker.
    with env.session() as s:
        row = s.get(Job, job["id"])
        assert row.max_attempts == env.settings.max_attempts
        assert JobRequest.model_validate(row.spec).seed == 42
        events = s.query(JobEvent).filter_by(job_id=job["id"]).all()
        assert [e.message for e in events] == ["Created fine-tuning job"]

    assert env.doorbells() == [(PREPARE, [job["id"]], "prepare")]


def test_defaults_and_random_seed(env):
    key = env.key()
    f = upload(env.client, key)
    a = create_job(env.client, key, f["id"])
    b = create_job(env.client, key, f["id"])
    assert isinstance(a["seed"], int) and 0 <= a["seed"] < 2**31
    assert a["hyperparameters"] == {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    assert a["tuning"] == Tuning().model_dump(mode="json") and a["tuning"]["r"] == 8
    assert a["hub"] is None and a["task"] is None and a["metadata"] is None
    # OpenAI's older top-level hyperparameters are accepted too.
    c = create_job(env.client, key, f["id"], hyperparameters={"batch_size": 8})
    assert c["hyperparameters"]["batch_size"] == 8
    # model@revision is a valid reference.
    d = create_job(env.client, key, f["id"], model="org/model@v1.0")
    assert d["model"] == "org/model@v1.0"
    # A job without a seed draws its own (secrets.randbelow(2**31 - 1)), not one fixed default: four
    # drawn seeds all equal would happen by chance once in 2**93.
    assert len({j["seed"] for j in (a, b, c, d)}) > 1 and len({j["id"] for j in (a, b, c, d)}) == 4


def test_validation_file(env):
    key = env.key()
    train, valid = upload(env.client, key), upload(env.client, key, name="valid.jsonl")
    job = create_job(env.client, key, train["id"], validation_file=valid["id"])
    assert job["validation_file"] == valid["id"]
    r = env.client.post(
        "/v1/fine_tuning/jobs", headers=auth(key),
        json={"model": "org/m", "training_file": train["id"], "validation_file": "file-missing"},
    )
    assert_error(r, 400, param="validation_file", code="file_not_found")
    r = env.client.post(
        "/v1/fine_tuning/jobs", headers=auth(key),
        json={"model": "org/m", "training_file": train["id"], "validation_file": train["id"]},
    )
    assert_error(r, 400, param="validation_file")


def test_list_jobs_newest_first_with_cursor(env):
    key = env.key()
    f = upload(env.client, key)
    made = [create_job(env.client, key, f["id"])["id"] for _ in range(5)]
    first = env.client.get("/v1/fine_tuning/jobs", headers=auth(key)).json()
    assert first["object"] == "list" and first["has_more"] is False
    assert [j["id"] for j in first["data"]] == made[::-1]

    page = env.client.get("/v1/fine_tuning/jobs", headers=auth(key), params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == made[:2:-1] and page["has_more"] is True
    page = env.client.get(
        "/v1/fine_tuning/jobs", headers=auth(key), params={"limit": 2, "after": page["data"][-1]["id"]}
    ).json()
    assert [j["id"] for j in page["data"]] == [made[2], made[1]] and page["has_more"] is True
    page = env.client.get(
        "/v1/fine_tuning/jobs", headers=auth(key), params={"limit": 2, "after": made[1]}
    ).json()
    assert [j["id"] for j in page["data"]] == [made[0]] and page["has_more"] is False

    for bad in (0, 101, "x"):
        assert_error(env.client.get("/v1/fine_tuning/jobs", headers=auth(key), params={"limit": bad}), 400,
                     param="limit")


def test_retrieve_shows_worker_fields(env):
    key = env.key()
    f = upload(env.client, key)
    job = create_job(env.client, key, f["id"], method={"supervised": {"hyperparameters": {"n_epochs": 2}}})
    t = now()
    with env.session() as s:
        row = s.get(Job, job["id"])
        row.status = Status.FAILED.value
        row.stage = "training"
        row.queue = "train"
        row.model_revision = "a" * 40
        row.hyperparameters = {"n_epochs": 2, "batch_size": 16, "learning_rate_multiplier": 1.0, "learning_rate": 2e-4}
        row.data_report = {"examples": 8, "tokens": 40}
        row.error = {"code": "out_of_memory", "message": "CUDA out of memory", "param": None}
        row.finished_at = t
        row.trained_tokens = 123
        row.attempts = 2
        s.commit()
    got = env.client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth(key)).json()
    assert got["status"] == "failed"  # a failed job is a 200 with its error
    assert got["error"] == {"code": "out_of_memory", "message": "CUDA out of memory", "param": None}
    assert got["hyperparameters"] == {"n_epochs": 2, "batch_size": 16, "learning_rate_multiplier": 1.0}
    assert got["stage"] == "training" and got["queue"] == "train" and got["model_revision"] == "a" * 40
    assert got["data_report"] == {"examples": 8, "tokens": 40}
    assert got["finished_at"] == int(t) and got["trained_tokens"] == 123 and got["attempts"] == 2


@pytest.mark.parametrize("status", ["validating_files", "queued", "running", "paused"])
def test_cancel_live_job(env, status):
    key = env.key()
    f = upload(env.client, key)
    job = create_job(env.client, key, f["id"])
    with env.session() as s:
        s.get(Job, job["id"]).status = status
        s.commit()
    r = env.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["finished_at"] is not None
    # Cancelling again is harmless.
    r = env.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(key))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    events = env.client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=auth(key)).json()["data"]
    assert [e["message"] for e in events] == ["Fine-tuning job cancelled", "Created fine-tuning job"]


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_cancel_finished_job_is_refused(env, status):
    key = env.key()
    f = upload(env.client, key)
    job = create_job(env.client, key, f["id"])
    with env.session() as s:
        s.get(Job, job["id"]).status = status
        s.commit()
    r = env.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(key))
    assert_error(r, 400, code="invalid_state")
    assert env.client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth(key)).json()["status"] == status


def test_pause_and_resume(env):
    key = env.key()
    f = upload(env.client, key)
    job = create_job(env.client, key, f["id"])
    jid = job["id"]
    assert_error(env.client.post(f"/v1/fine_tuning/jobs/{jid}/pause", headers=auth(key)), 400, code="invalid_state")
    with env.session() as s:
        row = s.get(Job, jid)
        row.status, row.queue = Status.RUNNING.value, "gpu-24g"
        s.commit()
    r = env.client.post(f"/v1/fine_tuning/jobs/{jid}/pause", headers=auth(key))
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = env.client.post(f"/v1/fine_tuning/jobs/{jid}/resume", headers=auth(key))
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert [d for d in env.doorbells() if d[0] == TRAIN] == [(TRAIN, [jid], "gpu-24g")]
    # Resuming a job that is already queued again changes nothing and rings nothing.
    r = env.client.post(f"/v1/fine_tuning/jobs/{jid}/resume", headers=auth(key))
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert [d for d in env.doorbells() if d[0] == TRAIN] == [(TRAIN, [jid], "gpu-24g")]
    r = env.client.post(f"/v1/fine_tuning/jobs/{jid}/cancel", headers=auth(key))
    assert r.json()["status"] == "cancelled"
    assert_error(env.client.post(f"/v1/fine_tuning/jobs/{jid}/resume", headers=auth(key)), 400, code="invalid_state")


def test_resume_waits_until_the_paused_worker_has_stopped(env):
    """Resuming while the paused job's worker still saves its stop checkpoint would let a second worker
    train beside it: a 409 to retry until the worker releases the lease (or the lease expires)."""
    from hubtune.lifecycle import release_stopped

    key = env.key()
    jid = create_job(env.client, key, upload(env.client, key)["id"])["id"]
    with env.session() as s:
        row = s.get(Job, jid)
        row.status, row.queue, row.lease_token = Status.RUNNING.value, "train", 7
        row.lease_owner, row.lease_expires_at = "gpu-1:42", now() + 60
        s.commit()
    assert env.client.post(f"/v1/fine_tuning/jobs/{jid}/pause", headers=auth(key)).json()["status"] == "paused"
    r = env.client.post(f"/v1/fine_tuning/jobs/{jid}/resume", headers=auth(key))
    assert_error(r, 409, code="still_stopping")
    assert r.headers["retry-after"] == "5"
    assert not [d for d in env.doorbells() if d[0] == TRAIN]
    with env.session() as s:
        release_stopped(s, jid, token=6)  # another lease's release frees nothing
        s.commit()
    assert_error(env.client.post(f"/v1/fine_tuning/jobs/{jid}/resume", headers=auth(key)), 409, code="still_stopping")
    with env.session() as s:
        release_stopped(s, jid, token=7)
        s.commit()
    r = env.client.post(f"/v1/fine_tuning/jobs/{jid}/resume", headers=auth(key))
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert [d for d in env.doorbells() if d[0] == TRAIN] == [(TRAIN, [jid], "train")]


def test_events_newest_first_with_cursor(env):
    key = env.key()
    f = upload(env.client, key)
    jid = create_job(env.client, key, f["id"])["id"]
    with env.session() as s:
        for i in range(4):
            s.add(JobEvent(job_id=jid, message=f"step {i}", type="metrics", level="info",
                           data={"step": i, "train_loss": 1.0 / (i + 1)}, created_at=now()))
        s.commit()
    url = f"/v1/fine_tuning/jobs/{jid}/events"
    body = env.client.get(url, headers=auth(key)).json()
    assert body["object"] == "list" and body["has_more"] is False
    assert [e["message"] for e in body["data"]] == ["step 3", "step 2", "step 1", "step 0", "Created fine-tuning job"]
    e = body["data"][0]
    assert e["object"] == "fine_tuning.job.event" and e["id"].startswith("ftevent-")
    assert e["type"] == "metrics" and e["level"] == "info" and e["data"] == {"step": 3, "train_loss": 0.25}
    assert isinstance(e["created_at"], int)

    page = env.client.get(url, headers=auth(key), params={"limit": 2}).json()
    assert [e["message"] for e in page["data"]] == ["step 3", "step 2"] and page["has_more"] is True
    page = env.client.get(url, headers=auth(key), params={"limit": 2, "after": page["data"][-1]["id"]}).json()
    assert [e["message"] for e in page["data"]] == ["step 1", "step 0"] and page["has_more"] is True
    assert_error(env.client.get(url, headers=auth(key), params={"after": "ftevent-abc"}), 400, param="after")


def test_checkpoints(env):
    key = env.key()
    f = upload(env.client, key)
    jid = create_job(env.client, key, f["id"])["id"]
    url = f"/v1/fine_tuning/jobs/{jid}/checkpoints"
    assert env.client.get(url, headers=auth(key)).json() == {
        "object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None,
    }
    with env.session() as s:
        for step in (10, 20, 30):
            s.add(Checkpoint(job_id=jid, step=step, path=f"/x/checkpoint-{step}",
                             metrics={"train_loss": 0.5, "valid_loss": 0.6}, created_at=now()))
        s.commit()
    body = env.client.get(url, headers=auth(key), params={"limit": 2}).json()
    assert [c["step_number"] for c in body["data"]] == [30, 20] and body["has_more"] is True
    c = body["data"][0]
    assert c["object"] == "fine_tuning.job.checkpoint" and c["id"].startswith("ftckpt-")
    assert c["fine_tuning_job_id"] == jid
    assert c["fine_tuned_model_checkpoint"] == f"{jid}:ckpt-step-30"
    assert c["metrics"] == {"step": 30, "train_loss": 0.5, "valid_loss": 0.6}
    rest = env.client.get(url, headers=auth(key), params={"after": body["last_id"]}).json()
    assert [c["step_number"] for c in rest["data"]] == [10] and rest["has_more"] is False

    with env.session() as s:
        s.get(Job, jid).fine_tuned_model = "acme/tickets-lora"
        s.commit()
    c = env.client.get(url, headers=auth(key), params={"limit": 1}).json()["data"][0]
    assert c["fine_tuned_model_checkpoint"] == "acme/tickets-lora:ckpt-step-30"


@pytest.mark.parametrize(("tuning_type", "says"), [
    ("nope", ["unknown tuning type 'nope'", "lora", "qlora", "adapter", "full", "ia3", "loha", "vera"]),
    ("adalora", ["update_and_allocate"]),
])
def test_an_unknown_tuning_type_is_a_400_at_create_naming_the_valid_ones(env, tuning_type, says):
    key = env.key()
    f = upload(env.client, key)
    r = env.client.post("/v1/fine_tuning/jobs", headers=auth(key),
                        json={"model": "org/model", "training_file": f["id"], "tuning": {"type": tuning_type}})
    error = assert_error(r, 400, param="tuning.type", code="invalid_value")
    assert all(text in error["message"] for text in says), error["message"]
    assert env.doorbells() == []  # no job, no prepare
    # Any peft method by its config name is accepted.
    assert create_job(env.client, key, f["id"], tuning={"type": "ia3"})["tuning"]["type"] == "ia3"
