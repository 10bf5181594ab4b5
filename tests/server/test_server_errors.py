"""Every user mistake is a 4xx in the OpenAI error shape naming `param`; never a 422 or a 500; and a
refused job rings no doorbell."""

from __future__ import annotations

import pytest

from hubtune.models import File, Job
from tests.server.apitest_helpers import assert_error, auth, upload

URL = "/v1/fine_tuning/jobs"


def _base(file_id: str) -> dict:
    return {"model": "sentence-transformers/all-MiniLM-L6-v2", "training_file": file_id}


BAD_BODIES = [
    # (extra fields, expected param, expected code or "<any>")
    ({"tuning": {"rank": 4}}, "tuning.rank", "unknown_parameter"),
    ({"learning_rate": 0.1}, "learning_rate", "unknown_parameter"),
    ({"hub": {"repo": "a/b"}}, "hub.repo", "unknown_parameter"),
    ({"method": {"supervised": {"hyperparameters": {"epochs": 3}}}},
     "method.supervised.hyperparameters.epochs", "unknown_parameter"),
    ({"tuning": {"r": 0}}, "tuning.r", "invalid_value"),
    ({"tuning": {"r": 100000}}, "tuning.r", "invalid_value"),
    ({"tuning": {"dropout": 1.5}}, "tuning.dropout", "invalid_value"),
    ({"tuning": {"type": "Bad Method!"}}, "tuning.type", "invalid_value"),
    ({"tuning": {"target_modules": []}}, "tuning.target_modules", "invalid_value"),
    ({"method": {"supervised": {"hyperparameters": {"n_epochs": 0}}}},
     "method.supervised.hyperparameters.n_epochs", "invalid_value"),
    ({"method": {"supervised": {"hyperparameters": {"n_epochs": "many"}}}},
     "method.supervised.hyperparameters.n_epochs", "invalid_value"),
    ({"method": {"type": "ppo"}}, "method.type", "invalid_value"),
    ({"hyperparameters": {"batch_size": -1}}, "hyperparameters.batch_size", "invalid_value"),
    ({"training": {"learning_rate": 5}}, "training.learning_rate", "invalid_value"),
    ({"training": {"max_seq_length": 2}}, "training.max_seq_length", "invalid_value"),
    ({"task": "regression"}, "task", "invalid_value"),
    ({"seed": -1}, "seed", "invalid_value"),
    ({"seed": 2**40}, "seed", "invalid_value"),
    ({"seed": "x"}, "seed", "invalid_value"),
    ({"suffix": "has spaces"}, "suffix", "invalid_value"),
    ({"metadata": {"k": 1}}, "metadata.k", "invalid_value"),
    ({"hub": {"branch": "a b"}}, "hub.branch", "invalid_value"),
    ({"model": "../../etc/passwd"}, "model", "<any>"),
    ({"model": "org/name/extra"}, "model", "<any>"),
    ({"model": "org/na me"}, "model", "<any>"),
    ({"model": "org/name@"}, "model", "<any>"),
    ({"model": ""}, "model", "invalid_value"),
    ({"model": "bad\x00model"}, "model", "<any>"),
    ({"hub": {"repo_id": "a/b/c"}}, "hub.repo_id", "<any>"),
    ({"hub": {"repo_id": "acme/..x"}}, "hub.repo_id", "<any>"),
    ({"metadata": {"k": "v\x00"}}, "metadata.k", "<any>"),
    ({"training_file": "file-does-not-exist"}, "training_file", "file_not_found"),
    ({"training_file": "file-\x00"}, "training_file", "invalid_value"),
    ({"training_file": None}, "training_file", "<any>"),
    ({"validation_file": "file-nope"}, "validation_file", "file_not_found"),
]


@pytest.mark.parametrize(("extra", "param", "code"), BAD_BODIES, ids=[str(p) for _, p, _ in BAD_BODIES])
def test_bad_job_bodies(env, extra, param, code):
    key = env.key()
    f = upload(env.client, key)
    r = env.client.post(URL, headers=auth(key), json=_base(f["id"]) | extra)
    error = assert_error(r, 400, param=param, code=code)
    if code == "unknown_parameter":
        assert param in error["message"]
    assert env.doorbells() == []
    with env.session() as s:
        assert s.query(Job).filter(Job.training_file == f["id"]).count() == 0


def test_missing_required_fields(env):
    key = env.key()
    assert_error(env.client.post(URL, headers=auth(key), json={"training_file": "file-x"}), 400, param="model",
                 code="missing_required_parameter")
    assert_error(env.client.post(URL, headers=auth(key), json={"model": "org/m"}), 400, param="training_file")


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"model": "org/m", ', {"content-type": "application/json"}),
        (b"not json at all", {"content-type": "application/json"}),
        (b'{"model": "\xff\xfe"}', {"content-type": "application/json"}),
        (b"[1, 2]", {"content-type": "application/json"}),
        (b'"just a string"', {"content-type": "application/json"}),
        (b"null", {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
        (b"model=org/m", {"content-type": "application/x-www-form-urlencoded"}),
        (b'{"model": "org/m"}', {"content-type": "text/plain"}),
    ],
)
def test_unparseable_bodies(env, content, headers):
    key = env.key()
    r = env.client.post(URL, headers=auth(key) | headers, content=content)
    assert_error(r, 400)
    assert env.doorbells() == []


def test_file_of_wrong_purpose_or_deleted(env):
    key = env.key()
    f = upload(env.client, key)
    with env.session() as s:
        s.get(File, f["id"]).purpose = "batch"  # cannot happen through the API; stored by an older version
        s.commit()
    assert_error(env.client.post(URL, headers=auth(key), json=_base(f["id"])), 400, param="training_file")
    g = upload(env.client, key)
    env.client.delete(f"/v1/files/{g['id']}", headers=auth(key))
    assert_error(env.client.post(URL, headers=auth(key), json=_base(g["id"])), 400, param="training_file",
                 code="file_not_found")
    assert env.doorbells() == []


def test_bad_ids_and_cursors(env):
    key = env.key()
    for path in (
        "/v1/files/file-nope", "/v1/files/file-nope/content", "/v1/files/%00",
        f"{URL}/ftjob-nope", f"{URL}/ftjob-nope/events", f"{URL}/ftjob-nope/checkpoints", f"{URL}/ftjob-%00",
    ):
        assert_error(env.client.get(path, headers=auth(key)), 404)
    for path in (f"{URL}/ftjob-nope/cancel", f"{URL}/ftjob-nope/pause", f"{URL}/ftjob-nope/resume"):
        assert_error(env.client.post(path, headers=auth(key)), 404)
    assert_error(env.client.delete("/v1/files/file-nope", headers=auth(key)), 404)
    assert_error(env.client.get(URL, headers=auth(key), params={"after": "ftjob-\x00"}), 400, param="after")
    assert_error(env.client.get("/v1/files", headers=auth(key), params={"after": "\x00"}), 400, param="after")


def test_failure_after_the_doorbell_was_queued_sends_nothing(env, monkeypatch):
    """ring() only queues the message in the transaction: a request that fails afterwards sends none."""
    import hubtune.jobs
    from server.errors import bad_request

    real_ring = hubtune.jobs.ring

    def ring_then_fail(session, task, job_id, **kw):
        real_ring(session, task, job_id, **kw)
        raise bad_request("simulated failure after ring", param="model")

    monkeypatch.setattr(hubtune.jobs, "ring", ring_then_fail)
    key = env.key()
    f = upload(env.client, key)
    assert_error(env.client.post(URL, headers=auth(key), json=_base(f["id"])), 400)
    assert env.doorbells() == []
    with env.session() as s:
        assert s.query(Job).filter(Job.training_file == f["id"]).count() == 0
    monkeypatch.undo()
    # The next, good request rings exactly its own doorbell (nothing left over from the failed one).
    r = env.client.post(URL, headers=auth(key), json=_base(f["id"]))
    assert r.status_code == 200
    assert [d[1] for d in env.doorbells()] == [[r.json()["id"]]]


def test_broker_down_still_answers_with_the_committed_job(env):
    from hubtune.queue import make_celery
    from hubtune.settings import Settings

    env.app.state.celery = make_celery(Settings(broker_url="redis://127.0.0.1:1/0", data_dir=env.settings.data_dir))
    env.app.state.celery.conf.broker_connection_timeout = 0.5
    env.app.state.celery.conf.broker_connection_max_retries = 0
    key = env.key()
    f = upload(env.client, key)
    r = env.client.post(URL, headers=auth(key), json=_base(f["id"]))
    assert r.status_code == 200, r.text
    with env.session() as s:
        assert s.get(Job, r.json()["id"]) is not None
