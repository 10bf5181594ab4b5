"""The dashboard's read endpoints (/v1/queues, /v1/workers), the job list filters, Prometheus /metrics,
and the dashboard's session cookie with its CSRF token — on PostgreSQL and SQLite.

The databases are shared by the whole test session, so every test names its own owners, queues and
workers and looks only at those."""

from __future__ import annotations

import secrets

from prometheus_client.parser import text_string_to_metric_families

from hubtune.ids import new_id
from hubtune.models import Job, WorkerRecord, now
from server.session import COOKIE_NAME
from tests.server.apitest_helpers import assert_error, auth


def _tag() -> str:
    return secrets.token_hex(4)


def _job(env, *, owner: str, status: str, queue: str | None = None, model: str = "tiny/bert", stage=None,
         started: float | None = None, finished: float | None = None) -> str:
    job_id = new_id("ftjob")  # time-ordered, like the API's
    with env.session() as s:
        s.add(Job(id=job_id, owner=owner, status=status, stage=stage, model=model, training_file="file-x", seed=1,
                  spec={"task": "sequence_classification", "tuning": {"type": "lora"}}, queue=queue,
                  attempts=0, max_attempts=3, lease_token=0, created_at=now(), updated_at=now(),
                  started_at=started, finished_at=finished))
        s.commit()
    return job_id


def _worker(env, *, queues: list[str], gpus=None, job_id=None, beat_age: float = 0.0) -> str:
    worker_id = f"host-{_tag()}:{secrets.randbelow(60000)}"
    with env.session() as s:
        s.add(WorkerRecord(id=worker_id, hostname="gpu-box-1", pid=4242, queues=queues, current_job_id=job_id,
                           resources={"gpus": gpus or [], "cpu_count": 16, "ram_bytes": 64 * 2**30},
                           started_at=now() - 100, last_heartbeat=now() - beat_age))
        s.commit()
    return worker_id


def _queue(body: dict, name: str) -> dict:
    return next(q for q in body["data"] if q["name"] == name)


def test_queues_count_waiting_running_and_name_their_workers(env):
    q = f"gpu-{_tag()}"
    owner = f"team-{_tag()}"
    running = _job(env, owner=owner, status="running", queue=q, stage="training")
    for _ in range(2):
        _job(env, owner=owner, status="queued", queue=q)
    _job(env, owner=owner, status="paused", queue=q)
    _job(env, owner=owner, status="succeeded", queue=q, started=now() - 60, finished=now())
    live = _worker(env, queues=[q], job_id=running,
                   gpus=[{"name": "H100", "memory_bytes": 80 * 2**30, "memory_used_bytes": 2**30, "utilization": 0.5}])
    _worker(env, queues=[q], beat_age=3600)  # stopped beating an hour ago: not online

    admin = env.client.get("/v1/queues", headers=auth(env.key(admin=True)))
    assert admin.status_code == 200, admin.text
    mine = _queue(admin.json(), q)
    assert (mine["waiting"], mine["running"], mine["paused"]) == (2, 1, 1)
    assert mine["worker_count"] == 1 and mine["workers"] == [live]
    hours = admin.json()["finished_per_hour"]
    assert len(hours) == 24 and hours[-1]["succeeded"] >= 1

    # A user sees the queue lengths but not which workers serve them.
    user = env.client.get("/v1/queues", headers=auth(env.key(owner))).json()
    assert _queue(user, q)["waiting"] == 2 and _queue(user, q)["workers"] is None


def test_workers_show_machine_and_current_job_to_admins_only(env):
    q = f"gpu-{_tag()}"
    job = _job(env, owner="someone", status="running", queue=q, stage="training")
    gpu = {"name": "NVIDIA H200", "memory_bytes": 141 * 2**30, "memory_used_bytes": 3 * 2**30, "utilization": 0.87}
    wid = _worker(env, queues=[q], gpus=[gpu], job_id=job)
    stale = _worker(env, queues=[q], beat_age=3600)

    body = env.client.get("/v1/workers", headers=auth(env.key(admin=True))).json()
    ids = [w["id"] for w in body["data"]]
    assert wid in ids and stale not in ids
    w = next(w for w in body["data"] if w["id"] == wid)
    assert w["hostname"] == "gpu-box-1" and w["queues"] == [q] and w["online"]
    assert w["resources"]["gpus"] == [gpu] and w["resources"]["cpu_count"] == 16
    assert w["current_job"] == {"id": job, "status": "running", "stage": "training", "model": "tiny/bert"}
    assert now() - w["last_heartbeat"] < 60

    everything = env.client.get("/v1/workers?all=true", headers=auth(env.key(admin=True))).json()
    assert stale in [w["id"] for w in everything["data"]]
    assert_error(env.client.get("/v1/workers", headers=auth(env.key())), 403, code="forbidden")


def test_job_list_filters_by_status_owner_and_model(env):
    alice, bob = f"alice-{_tag()}", f"bob-{_tag()}"
    model = f"tiny/m-{_tag()}"
    a_run = _job(env, owner=alice, status="running", model=model)
    a_done = _job(env, owner=alice, status="succeeded", model=model)
    b_run = _job(env, owner=bob, status="running", model=model)
    admin = auth(env.key(admin=True))

    def ids(headers, **params):
        r = env.client.get("/v1/fine_tuning/jobs", headers=headers, params={"limit": 100, **params})
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()["data"]]

    assert ids(admin, model=model) == [b_run, a_done, a_run]  # newest first
    assert ids(admin, model=model, owner=alice) == [a_done, a_run]
    assert ids(admin, model=model, status="running") == [b_run, a_run]
    assert ids(admin, owner=alice, status="succeeded") == [a_done]
    # Paging keeps the filter.
    first = env.client.get("/v1/fine_tuning/jobs", headers=admin, params={"model": model, "limit": 2}).json()
    assert first["has_more"] and [j["id"] for j in first["data"]] == [b_run, a_done]
    assert ids(admin, model=model, after=a_done) == [a_run]

    alice_key = auth(env.key(alice))
    assert ids(alice_key, model=model) == [a_done, a_run]  # never bob's
    assert ids(alice_key, owner=alice, status="running") == [a_run]
    assert_error(env.client.get("/v1/fine_tuning/jobs", headers=alice_key, params={"owner": bob}), 403,
                 param="owner", code="forbidden")
    assert_error(env.client.get("/v1/fine_tuning/jobs", headers=admin, params={"status": "bogus"}), 400,
                 param="status", code="invalid_value")


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_prometheus_metrics(env):
    q = f"gpu-{_tag()}"
    owner = f"m-{_tag()}"
    for _ in range(3):
        _job(env, owner=owner, status="queued", queue=q)
    _job(env, owner=owner, status="running", queue=q)
    _job(env, owner=owner, status="succeeded", started=now() - 120, finished=now())
    wid = _worker(env, queues=[q], gpus=[{"name": "H200", "memory_bytes": 100, "memory_used_bytes": 40,
                                          "utilization": 0.25}])
    r = env.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fams = _families(r.text)

    def value(name, **labels):
        return next(s.value for s in fams[name].samples if all(s.labels.get(k) == v for k, v in labels.items())
                    and s.name == name)

    assert value("hubtune_queue_depth", queue=q) == 3 and value("hubtune_queue_running", queue=q) == 1
    assert value("hubtune_jobs", status="queued") >= 3 and value("hubtune_jobs", status="succeeded") >= 1
    assert value("hubtune_workers_online") >= 1
    assert value("hubtune_gpu_memory_used_bytes", worker=wid) == 40
    assert value("hubtune_gpu_utilization_ratio", worker=wid) == 0.25
    assert value("hubtune_gpu_memory_total_bytes", worker=wid) == 100
    hist = {(s.name, s.labels.get("le")): s.value for s in fams["hubtune_job_duration_seconds"].samples}
    # The 2-minute job is over 60 s and within 300 s.
    assert hist[("hubtune_job_duration_seconds_bucket", "300.0")] - hist[("hubtune_job_duration_seconds_bucket", "60.0")] >= 1
    assert hist[("hubtune_job_duration_seconds_count", None)] >= 1


def test_session_cookie_login_and_csrf(env):
    owner = f"carol-{_tag()}"
    key = env.key(owner)
    mine = _job(env, owner=owner, status="queued", queue="train")
    theirs = _job(env, owner=f"dave-{_tag()}", status="queued", queue="train")
    c = env.client
    c.cookies.clear()
    assert_error(c.post("/dashboard/login", json={"api_key": "ht-wrong"}), 401)

    r = c.post("/dashboard/login", json={"api_key": key})
    assert r.status_code == 200, r.text
    session = r.json()
    assert session["owner"] == owner and not session["is_admin"] and session["csrf_token"]
    assert session["hub_base_url"] is None  # the local hub folder has no web address to link
    set_cookie = r.headers["set-cookie"]
    assert f"{COOKIE_NAME}=" in set_cookie and "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    assert key not in set_cookie  # the cookie names the key's id, never the key

    # The cookie reads the API as the key's owner, with no bearer key at all.
    listed = [j["id"] for j in c.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]]
    assert mine in listed and theirs not in listed
    assert c.get(f"/v1/fine_tuning/jobs/{theirs}").status_code == 404
    assert c.get("/dashboard/session").json()["csrf_token"] == session["csrf_token"]

    # Actions need the CSRF token: without it (or with a forged one) nothing happens.
    assert_error(c.post(f"/v1/fine_tuning/jobs/{mine}/cancel"), 403, code="csrf_failed")
    assert_error(c.post(f"/v1/fine_tuning/jobs/{mine}/cancel", headers={"X-CSRF-Token": "forged"}), 403,
                 code="csrf_failed")
    assert c.get(f"/v1/fine_tuning/jobs/{mine}").json()["status"] == "queued"
    ok = c.post(f"/v1/fine_tuning/jobs/{mine}/cancel", headers={"X-CSRF-Token": session["csrf_token"]})
    assert ok.status_code == 200 and ok.json()["status"] == "cancelled"

    # A tampered cookie is no session.
    cookie = c.cookies.get(COOKIE_NAME)
    payload, signature = cookie.split(".")
    forged = {"Cookie": f"{COOKIE_NAME}={payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{signature}"}
    c.cookies.clear()
    assert c.get("/v1/fine_tuning/jobs", headers=forged).status_code == 401
    c.cookies.set(COOKIE_NAME, cookie)

    assert c.post("/dashboard/logout", headers={"X-CSRF-Token": session["csrf_token"]}).status_code == 204
    c.cookies.clear()
    assert c.get("/dashboard/session").status_code == 401


def test_dashboard_page_and_security_headers(env):
    r = env.client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "/dashboard/static/app.js" in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    js = env.client.get("/dashboard/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    # No script or stylesheet from anywhere but this server.
    assert "http://" not in r.text and "https://" not in r.text
    # The API docs keep working (their Swagger UI comes from a CDN): no dashboard policy there.
    docs = env.client.get("/docs")
    assert "content-security-policy" not in docs.headers and docs.headers["x-content-type-options"] == "nosniff"
