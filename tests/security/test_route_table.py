"""Every route of the app, found by walking app.routes (a new route is covered without editing this
file): without credentials none answers 500 and every non-public one answers 401; with another owner's
ids every route answers 404 (or 403 where it is admin-only) and changes nothing."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from hubtune.keys import lookup_key
from tests.server.apitest_helpers import auth, upload

# Routes that answer without an API key (the hub webhook checks its own shared secret instead).
PUBLIC = {
    ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"),
    ("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/"), ("POST", "/dashboard/login"),
}
HEADS_UP = "a route has a path parameter this table does not know: add an object of that kind to `owned`"


def _routes(app) -> list[tuple[str, str, object]]:
    out = []
    for ctx in iter_route_contexts(app.routes):
        for method in sorted(ctx.methods or ()):
            if method != "HEAD":
                out.append((method, ctx.path, ctx.route))
    return out


def _call(client, method: str, path: str, headers: dict | None = None):
    kwargs = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    return client.request(method, path, headers=headers or {}, **kwargs)


def test_no_route_answers_500_without_credentials(env):
    routes = _routes(env.app)
    assert len(routes) >= 30
    for method, path, route in routes:
        url = path.replace("{", "").replace("}", "")  # any id: nobody may learn whether it exists
        r = _call(env.client, method, url)
        assert r.status_code < 500, (method, path, r.status_code, r.text)
        if (method, path) in PUBLIC:
            continue
        if path == "/v1/hub/webhooks":
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_webhook_secret"
            continue
        assert isinstance(route, APIRoute), (method, path)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid_api_key"


@pytest.fixture
def owned(env):
    """An owner with one object of every kind a path can name, and another owner's key."""
    owner = env.key()
    f = upload(env.client, owner)
    job = env.client.post("/v1/fine_tuning/jobs", headers=auth(owner),
                          json={"model": "org/model", "training_file": f["id"]}).json()
    cred = env.client.post("/v1/hub/credentials", headers=auth(owner), json={"name": "c", "token": "hf_secret"}).json()
    trig = env.client.post("/v1/hub/triggers", headers=auth(owner), json={
        "repo_id": "org/data", "job": {"model": "org/model", "training_file": "hf://datasets/org/data@main/t.jsonl"},
    }).json()
    with env.session() as s:
        key_id = lookup_key(s, owner).id
    ids = {"file_id": f["id"], "fine_tuning_job_id": job["id"], "credential_id": cred["id"], "trigger_id": trig["id"],
           "key_id": key_id}
    return owner, env.key(), ids


def test_another_owners_ids_are_404_on_every_route(env, owned):
    owner, other, ids = owned
    checked = 0
    for method, path, route in _routes(env.app):
        if "{" not in path:
            continue
        url = path
        for name in route.param_convertors:
            assert name in ids, (path, HEADS_UP)
            url = url.replace("{" + name + "}", ids[name])
        r = _call(env.client, method, url, auth(other))
        assert r.status_code in (403, 404), (method, path, r.status_code, r.text)
        assert ids[next(iter(route.param_convertors))] in r.json()["error"]["message"] or r.status_code == 403
        checked += 1
    assert checked >= 12
    # Nothing changed for the owner: every object is still there and the job is still live.
    assert env.client.get(f"/v1/files/{ids['file_id']}", headers=auth(owner)).status_code == 200
    job = env.client.get(f"/v1/fine_tuning/jobs/{ids['fine_tuning_job_id']}", headers=auth(owner)).json()
    assert job["status"] == "validating_files"
    assert [c["id"] for c in env.client.get("/v1/hub/credentials", headers=auth(owner)).json()["data"]] == [
        ids["credential_id"]]
    assert [t["id"] for t in env.client.get("/v1/hub/triggers", headers=auth(owner)).json()["data"]] == [
        ids["trigger_id"]]


def test_lists_show_another_owner_nothing(env, owned):
    """Every GET route without path parameters, read with the other key, names none of the owner's ids."""
    _owner, other, ids = owned
    for method, path, _route in _routes(env.app):
        if method != "GET" or "{" in path:
            continue
        r = env.client.get(path, headers=auth(other))
        assert r.status_code < 500, (path, r.status_code)
        for value in ids.values():
            assert value not in r.text, (path, value)


def test_an_admin_sees_them(env, owned):
    """The other side of the table: the 404s above come from ownership, not from broken ids."""
    _owner, _other, ids = owned
    admin = env.key(admin=True)
    assert env.client.get(f"/v1/files/{ids['file_id']}", headers=auth(admin)).status_code == 200
    assert env.client.get(f"/v1/fine_tuning/jobs/{ids['fine_tuning_job_id']}", headers=auth(admin)).status_code == 200
