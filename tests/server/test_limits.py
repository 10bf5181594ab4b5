"""Limits and fairness: queued jobs per owner, priority, the rate limit, upload size (streamed), line length."""

from __future__ import annotations

import json
import select
import socket
import time
from urllib.parse import urlparse

import openai
import pytest
from sqlalchemy import func, select as sql_select, update

from hubtune.models import File, Job
from server.limits import TokenBucket
from tests.server.apitest_helpers import assert_error, auth, make_env, serve, upload

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def _create(env, key, file_id, **extra):
    return env.client.post("/v1/fine_tuning/jobs", headers=auth(key),
                           json={"model": MODEL, "training_file": file_id, **extra})


# --- queued jobs per owner --------------------------------------------------------------------------


def test_queued_jobs_limit_per_owner(env_factory):
    env = env_factory(max_queued_jobs_per_owner=2)
    key, other = env.key(), env.key()
    f = upload(env.client, key)
    first, second = (_create(env, key, f["id"]).json() for _ in range(2))
    r = _create(env, key, f["id"])
    err = assert_error(r, 429, code="too_many_queued_jobs")
    assert "limit is 2" in err["message"]
    assert r.headers["x-should-retry"] == "false" and int(r.headers["retry-after"]) > 0
    # Another owner has its own allowance.
    assert _create(env, other, upload(env.client, other)["id"]).status_code == 200

    # A job that starts running, or is cancelled, frees a place; a paused one still waits.
    with env.session() as s:
        s.execute(update(Job).where(Job.id == first["id"]).values(status="running"))
        s.commit()
    third = _create(env, key, f["id"])
    assert third.status_code == 200, third.text
    assert_error(_create(env, key, f["id"]), 429, code="too_many_queued_jobs")
    assert env.client.post(f"/v1/fine_tuning/jobs/{second['id']}/cancel", headers=auth(key)).status_code == 200
    with env.session() as s:
        s.execute(update(Job).where(Job.id == third.json()["id"]).values(status="paused"))
        s.commit()
    assert _create(env, key, f["id"]).status_code == 200
    assert_error(_create(env, key, f["id"]), 429, code="too_many_queued_jobs")


def test_queued_limit_is_not_retried_by_the_openai_client(postgres_url, tmp_path):
    env = make_env(postgres_url, tmp_path / "data", max_queued_jobs_per_owner=1)
    key = env.key()
    f = upload(env.client, key)
    assert _create(env, key, f["id"]).status_code == 200
    sent: list[str] = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [lambda request: sent.append(request.url.path)]})
    with serve(env.app) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=3, http_client=http)
        with pytest.raises(openai.RateLimitError) as exc:
            client.fine_tuning.jobs.create(model=MODEL, training_file=f["id"])
    assert exc.value.code == "too_many_queued_jobs"
    assert sent == ["/v1/fine_tuning/jobs"]


# --- priority -----------------------------------------------------------------------------------------


def test_priority_is_bounded_stored_and_echoed(env):
    user, admin = env.key(), env.key(admin=True)
    f = upload(env.client, user)
    assert _create(env, user, f["id"]).json()["priority"] == 0
    low = _create(env, user, f["id"], priority=-5)
    assert low.status_code == 200 and low.json()["priority"] == -5
    assert_error(_create(env, user, f["id"], priority=5), 403, param="priority", code="forbidden")
    high = _create(env, admin, f["id"], priority=50)
    assert high.status_code == 200 and high.json()["priority"] == 50
    for bad in (101, -101, "high", 1.5):
        assert_error(_create(env, admin, f["id"], priority=bad), 400, param="priority")
    with env.session() as s:
        assert s.get(Job, low.json()["id"]).priority == -5
        assert s.get(Job, high.json()["id"]).priority == 50
    got = env.client.get(f"/v1/fine_tuning/jobs/{high.json()['id']}", headers=auth(admin)).json()
    assert got["priority"] == 50
    # A trigger's jobs start as its owner's, so its template cannot raise the priority either.
    trigger = {"repo_id": "org/data", "job": {"model": MODEL, "training_file": "hf://datasets/org/data/t.jsonl",
                                              "priority": 5}}
    assert_error(env.client.post("/v1/hub/triggers", headers=auth(admin), json=trigger), 403,
                 param="job.priority", code="forbidden")


# --- rate limit ---------------------------------------------------------------------------------------


def test_rate_limit_per_key_with_retry_after(env_factory):
    env = env_factory(rate_limit_per_minute=3)
    a, b = env.key(), env.key()
    for _ in range(3):
        assert env.client.get("/v1/files", headers=auth(a)).status_code == 200
    r = env.client.get("/v1/files", headers=auth(a))
    err = r.json()["error"]  # OpenAI's own rate-limit errors carry type "requests"
    assert r.status_code == 429 and err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
    assert set(err) == {"message", "type", "param", "code"}
    assert 1 <= int(r.headers["retry-after"]) <= 20  # one token comes back every 60/3 s
    assert r.headers["x-content-type-options"] == "nosniff"  # error answers get the headers too
    # Another key has its own bucket; health and metrics are never limited.
    assert env.client.get("/v1/files", headers=auth(b)).status_code == 200
    for _ in range(5):
        assert env.client.get("/healthz").status_code == 200
    # Requests without credentials count against the client address.
    codes = [env.client.get("/v1/files").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]


def test_no_rate_limit_by_default(env):
    key = env.key()
    assert all(env.client.get("/v1/files", headers=auth(key)).status_code == 200 for _ in range(30))


def test_token_bucket_refills_over_time():
    clock = [0.0]
    bucket = TokenBucket(6, clock=lambda: clock[0])  # one token per 10 s
    assert [bucket.take("k") for _ in range(6)] == [0.0] * 6
    assert bucket.take("k") == pytest.approx(10.0)
    clock[0] = 4.0
    assert bucket.take("k") == pytest.approx(6.0)
    clock[0] = 10.0
    assert bucket.take("k") == 0.0 and bucket.take("k") > 0
    assert bucket.take("other") == 0.0


# --- upload size ------------------------------------------------------------------------------------


def test_upload_over_the_limit_is_a_413(env_factory):
    env = env_factory(max_upload_bytes=1000)
    key = env.key()
    line = json.dumps({"text": "x" * 80, "label": "a"}).encode() + b"\n"
    assert upload(env.client, key, line * 5)["bytes"] == len(line) * 5
    r = env.client.post("/v1/files", headers=auth(key), files={"file": ("t.jsonl", line * 20)},
                        data={"purpose": "fine-tune"})
    assert_error(r, 413, param="file", code="file_too_large")
    # A declared length past the limit (file plus envelope) is refused before the body is read.
    big = env.client.post("/v1/files", headers=auth(key), files={"file": ("t.jsonl", b"x" * (2 << 20))},
                          data={"purpose": "fine-tune"})
    assert_error(big, 413, param="file", code="file_too_large")
    # Any other route takes a small JSON body only.
    huge = env.client.post("/v1/fine_tuning/jobs", headers={**auth(key), "Content-Type": "application/json"},
                           content=b"[" + b"1," * (3 << 20) + b"1]")
    assert_error(huge, 413, code="request_too_large")
    with env.session() as s:
        assert s.scalar(sql_select(func.count()).select_from(File).where(File.bytes > 1000)) == 0


def test_chunked_upload_is_cut_off_while_streaming(postgres_url, tmp_path):
    """A body without a length is counted as it arrives: the server answers 413 long before the
    client has sent it all, and nothing of it is kept."""
    env = make_env(postgres_url, tmp_path / "data", max_upload_bytes=1 << 20)
    key = env.key()
    total = 200 << 20
    with serve(env.app) as base:
        status, sent = _chunked_upload(urlparse(base), key, total)
    assert status == 413
    assert sent < 40 << 20, f"sent {sent} bytes before the answer"  # limit 2 MiB plus socket buffers
    files_dir = env.settings.storage_dir / "files"
    assert not files_dir.exists() or list(files_dir.iterdir()) == []


def _chunked_upload(url, key: str, total: int) -> tuple[int, int]:
    boundary = "hubtuneboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.jsonl\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    sock.sendall(
        (f"POST /v1/files HTTP/1.1\r\nHost: {url.hostname}\r\nAuthorization: Bearer {key}\r\n"
         f"Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    )
    chunk = b"x" * (256 << 10)
    sent = 0
    answer = b""
    deadline = time.monotonic() + 60
    try:
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        while sent < total and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        else:
            tail = f"\r\n--{boundary}--\r\n".encode()
            sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))  # all sent: end the body
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.settimeout(10)
    try:
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    return int(answer.split(b" ", 2)[1]), sent


# --- line length ------------------------------------------------------------------------------------


def test_a_line_over_the_limit_is_refused_with_its_number(env_factory):
    env = env_factory(max_line_bytes=64)
    key = env.key()
    ok = json.dumps({"text": "short", "label": "a"}).encode() + b"\n"
    long = json.dumps({"text": "y" * 100, "label": "b"}).encode() + b"\n"
    err = assert_error(
        env.client.post("/v1/files", headers=auth(key), files={"file": ("t.jsonl", ok * 2 + long + ok)},
                        data={"purpose": "fine-tune"}),
        400, param="file", code="line_too_long",
    )
    assert "Line 3 " in err["message"] and "64 bytes" in err["message"]
    assert upload(env.client, key, ok * 3)["bytes"] == len(ok) * 3
    with env.session() as s:
        assert s.scalar(sql_select(func.count()).select_from(File)) >= 1
    kept = sorted(p.name for p in (env.settings.storage_dir / "files").iterdir())
    assert len(kept) == 1  # the refused file left nothing behind


def test_racing_creates_cannot_pass_the_queued_limit_together(postgres_url, tmp_path, monkeypatch):
    """Each create pauses right after its count; without the owner's lock all six would count the
    same jobs and pass."""
    import threading

    from hubtune import jobs

    env = make_env(postgres_url, tmp_path / "data", max_queued_jobs_per_owner=2)
    key = env.key()
    f = upload(env.client, key)
    real_check = jobs.check_queued_limit

    def slow_check(*args, **kwargs):
        real_check(*args, **kwargs)
        time.sleep(0.3)

    monkeypatch.setattr(jobs, "check_queued_limit", slow_check)
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(_create(env, key, f["id"]).status_code))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(codes) == [200, 200, 429, 429, 429, 429]
