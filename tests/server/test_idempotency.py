"""Idempotency-Key on POST /v1/fine_tuning/jobs: replays, conflicts, races, and the openai client."""

from __future__ import annotations

import threading

import openai
import pytest
from sqlalchemy import func, select

from hubtune.models import IdempotencyKey, Job
from hubtune.queue import PREPARE
from server import crud
from tests.server.apitest_helpers import assert_error, auth, upload

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def _post(env, key: str, body: dict, idem: str | None):
    headers = {**auth(key), **({"Idempotency-Key": idem} if idem is not None else {})}
    return env.client.post("/v1/fine_tuning/jobs", headers=headers, json=body)


def _jobs(env) -> int:
    with env.session() as s:
        return s.scalar(select(func.count()).select_from(Job))


def test_same_key_and_body_give_the_same_job_once(env):
    key = env.key()
    f = upload(env.client, key)
    body = {"model": MODEL, "training_file": f["id"], "suffix": "a", "training": {"max_seq_length": 64}}
    before = _jobs(env)
    first = _post(env, key, body, "retry-1")
    assert first.status_code == 200, first.text
    # The same request written differently (field order, an explicit default) is the same request.
    reordered = {"training": {"max_seq_length": 64}, "suffix": "a", "training_file": f["id"], "model": MODEL,
                 "tuning": {"type": "lora"}}
    again = _post(env, key, reordered, "retry-1")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["seed"] == first.json()["seed"]
    assert _jobs(env) == before + 1
    assert env.doorbells() == [(PREPARE, [first.json()["id"]], "prepare")]  # no second doorbell
    with env.session() as s:
        row = s.get(IdempotencyKey, (first.json()["organization_id"], "retry-1"))
        assert row is not None and row.job_id == first.json()["id"] and len(row.request_hash) == 64

    # Without the header, or with another key, the same body makes a new job.
    assert _post(env, key, body, None).json()["id"] != first.json()["id"]
    assert _post(env, key, body, "retry-2").json()["id"] != first.json()["id"]
    assert _jobs(env) == before + 3


def test_same_key_other_body_is_a_409_not_to_retry(env):
    key = env.key()
    f = upload(env.client, key)
    assert _post(env, key, {"model": MODEL, "training_file": f["id"]}, "k").status_code == 200
    before = _jobs(env)
    r = _post(env, key, {"model": MODEL, "training_file": f["id"], "suffix": "other"}, "k")
    assert_error(r, 409, param="Idempotency-Key", code="idempotency_key_reused")
    assert r.headers["x-should-retry"] == "false"
    assert "Idempotency-Key" in r.json()["error"]["message"]
    assert _jobs(env) == before


def test_keys_are_per_owner(env):
    a, b = env.key(), env.key()
    fa, fb = upload(env.client, a), upload(env.client, b)
    ja = _post(env, a, {"model": MODEL, "training_file": fa["id"]}, "shared")
    jb = _post(env, b, {"model": MODEL, "training_file": fb["id"]}, "shared")
    assert ja.status_code == jb.status_code == 200
    assert ja.json()["id"] != jb.json()["id"]
    assert jb.json()["organization_id"] != ja.json()["organization_id"]


@pytest.mark.parametrize("bad", ["", "   ", "x" * 256, "tab\there"])
def test_unusable_key_is_a_400_naming_the_header(env, bad):
    key = env.key()
    f = upload(env.client, key)
    before = _jobs(env)
    assert_error(_post(env, key, {"model": MODEL, "training_file": f["id"]}, bad), 400,
                 param="Idempotency-Key", code="invalid_idempotency_key")
    assert _jobs(env) == before


def test_a_refused_request_does_not_use_up_the_key(env):
    key = env.key()
    f = upload(env.client, key)
    assert _post(env, key, {"model": MODEL, "training_file": "file-missing"}, "k").status_code == 400
    ok = _post(env, key, {"model": MODEL, "training_file": f["id"]}, "k")
    assert ok.status_code == 200, ok.text


def test_racing_duplicates_make_one_job(pg_env, monkeypatch):
    """Both requests pass the replay check before either commits (a barrier holds them there), so
    both insert the key; PostgreSQL lets one commit and the other answers with the winner's job."""
    env = pg_env
    key = env.key()
    f = upload(env.client, key)
    barrier = threading.Barrier(2, timeout=20)
    real_create = crud.create_job

    def create_then_wait(*args, **kwargs):
        job = real_create(*args, **kwargs)
        barrier.wait()
        return job

    monkeypatch.setattr(crud, "create_job", create_then_wait)
    body = {"model": MODEL, "training_file": f["id"], "suffix": "race"}
    before = _jobs(env)
    answers: list = [None, None]

    def send(i: int) -> None:
        answers[i] = _post(env, key, body, "race-key")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[0].json()["id"] == answers[1].json()["id"]
    assert _jobs(env) == before + 1
    assert env.doorbells() == [(PREPARE, [answers[0].json()["id"]], "prepare")]


def test_openai_client_with_an_idempotency_key(live_server, tmp_path):
    """The official client passes the header through (`extra_headers`; it sends none by itself) and
    gives up on the 409 at once although 409 is a status it retries by default."""
    env, base_url = live_server
    sent: list[str] = []
    keys: list[str | None] = []

    def record(request) -> None:
        sent.append(request.url.path)
        keys.append(request.headers.get("idempotency-key"))

    http = openai.DefaultHttpxClient(event_hooks={"request": [record]})
    client = openai.OpenAI(base_url=base_url, api_key=env.key(), max_retries=2, timeout=30, http_client=http)
    train = tmp_path / "train.jsonl"
    train.write_bytes(b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    with train.open("rb") as fh:
        f = client.files.create(file=fh, purpose="fine-tune")

    plain = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id)
    assert keys[-1] is None  # what the README says: this client sends no key of its own
    assert plain.status == "validating_files"

    first = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id, extra_headers={"Idempotency-Key": "abc"})
    assert keys[-1] == "abc"
    again = client.fine_tuning.jobs.create(model=MODEL, training_file=f.id, extra_headers={"Idempotency-Key": "abc"})
    assert again.id == first.id

    sent.clear()
    with pytest.raises(openai.ConflictError) as exc:
        client.fine_tuning.jobs.create(model=MODEL, training_file=f.id, suffix="changed",
                                       extra_headers={"Idempotency-Key": "abc"})
    assert exc.value.code == "idempotency_key_reused" and exc.value.param == "Idempotency-Key"
    assert sent == ["/v1/fine_tuning/jobs"]  # one request: x-should-retry: false was obeyed
