"""Job metadata as OpenAI has it (and as its official client sends it): up to 16 string pairs (keys up to
64 characters, values up to 512), stored and returned, and a filter on the job list (metadata[key]=value,
all pairs AND-ed; metadata=null), answered in SQL on PostgreSQL and SQLite, within the key's own jobs."""

from __future__ import annotations

from tests.server.apitest_helpers import TRAIN_JSONL, assert_error, auth, create_job, upload


def _ids(env, key, params) -> list[str]:
    r = env.client.get("/v1/fine_tuning/jobs", headers=auth(key), params=params)
    assert r.status_code == 200, r.text
    return [job["id"] for job in r.json()["data"]]


def test_metadata_is_stored_returned_and_filters_the_list(env):
    key = env.key()
    f = upload(env.client, key)["id"]
    a = create_job(env.client, key, f, metadata={"team": "support", "env": "prod"})
    b = create_job(env.client, key, f, metadata={"team": "support", "env": "dev"})
    c = create_job(env.client, key, f, metadata={"team": "search"})
    d = create_job(env.client, key, f)
    e = create_job(env.client, key, f, metadata={})
    dotted = create_job(env.client, key, f, metadata={"ml.team[0]": "a b", "ünï": "çödé"})
    got = env.client.get(f"/v1/fine_tuning/jobs/{a['id']}", headers=auth(key)).json()
    assert got["metadata"] == {"team": "support", "env": "prod"}

    assert _ids(env, key, {"metadata[team]": "support"}) == [b["id"], a["id"]]  # newest first
    assert _ids(env, key, {"metadata[team]": "support", "metadata[env]": "prod"}) == [a["id"]]  # AND
    assert _ids(env, key, {"metadata[team]": "search", "metadata[env]": "prod"}) == []
    assert _ids(env, key, {"metadata[team]": "Support"}) == []  # exact values
    assert _ids(env, key, {"metadata[owner]": "support"}) == []  # a key no job has
    assert _ids(env, key, {"metadata": "null"}) == [e["id"], d["id"]]
    assert _ids(env, key, {"metadata[ml.team[0]]": "a b", "metadata[ünï]": "çödé"}) == [dotted["id"]]
    assert _ids(env, key, {"metadata[ml]": "a b"}) == []  # a key with a dot is one key, not a path
    assert _ids(env, key, {}) == [dotted["id"], e["id"], d["id"], c["id"], b["id"], a["id"]]
    # The filter pages like the others.
    r = env.client.get("/v1/fine_tuning/jobs", headers=auth(key), params={"metadata[team]": "support", "limit": 1})
    assert [j["id"] for j in r.json()["data"]] == [b["id"]] and r.json()["has_more"] is True
    assert _ids(env, key, {"metadata[team]": "support", "after": b["id"]}) == [a["id"]]


def test_another_owners_jobs_never_match(env):
    alice, mallory = env.key(), env.key()
    f = upload(env.client, alice)["id"]
    job = create_job(env.client, alice, f, metadata={"project": "secret-launch"})
    assert _ids(env, mallory, {"metadata[project]": "secret-launch"}) == []
    assert _ids(env, alice, {"metadata[project]": "secret-launch"}) == [job["id"]]
    admin = env.key(admin=True)
    assert job["id"] in _ids(env, admin, {"metadata[project]": "secret-launch", "limit": 100})


def test_openai_limits_are_clear_400s(env):
    key = env.key()
    f = upload(env.client, key)["id"]

    def create(metadata):
        body = {"model": "m/m", "training_file": f, "metadata": metadata}
        return env.client.post("/v1/fine_tuning/jobs", headers=auth(key), json=body)

    ok = create({**{f"k{i}": "v" * 512 for i in range(15)}, "k" * 64: "x"})  # 16 keys, each at its limit
    assert ok.status_code == 200, ok.text
    error = assert_error(create({f"k{i}": "v" for i in range(17)}), 400, param="metadata")
    assert "16" in error["message"] and "17" in error["message"]
    error = assert_error(create({"k" * 65: "v"}), 400, param="metadata")
    assert "64" in error["message"]
    assert_error(create({"k": "v" * 513}), 400, param="metadata.k")
    assert_error(create({"": "v"}), 400, param="metadata")
    assert_error(create({"k": 1}), 400, param="metadata.k")


def test_bad_filters_name_the_parameter(env):
    key = env.key()
    r = env.client.get("/v1/fine_tuning/jobs", headers=auth(key), params={"metadata": "team"})
    assert_error(r, 400, param="metadata", code="invalid_value")
    r = env.client.get("/v1/fine_tuning/jobs", headers=auth(key), params={"metadata[" + "k" * 65 + "]": "v"})
    assert_error(r, 400, code="invalid_value")
    r = env.client.get("/v1/fine_tuning/jobs", headers=auth(key), params={"metadata": "null", "metadata[k]": "v"})
    assert_error(r, 400, param="metadata")
    r = env.client.get("/v1/fine_tuning/jobs", headers=auth(key), params={'metadata[a"b]': "v"})
    assert_error(r, 400, param='metadata[a"b]')


def test_a_lone_surrogate_in_metadata_is_a_400_naming_the_key(env):
    key = env.key()
    f = upload(env.client, key)["id"]
    body = '{"model": "m/m", "training_file": "%s", "metadata": {"k": "\\ud800"}}' % f  # a lone surrogate
    r = env.client.post("/v1/fine_tuning/jobs", headers={**auth(key), "Content-Type": "application/json"},
                        content=body)
    assert_error(r, 400, param="metadata.k")


def test_the_openai_client_sets_and_filters_metadata(live_server, tmp_path):
    import openai

    env, base_url = live_server
    client = openai.OpenAI(base_url=base_url, api_key=env.key(), max_retries=0, timeout=30)
    train = tmp_path / "train.jsonl"
    train.write_bytes(TRAIN_JSONL)
    with train.open("rb") as fh:
        f = client.files.create(file=fh, purpose="fine-tune")
    tagged = client.fine_tuning.jobs.create(model="m/m", training_file=f.id, metadata={"team": "support"},
                                            integrations=[{"type": "tensorboard"}])
    client.fine_tuning.jobs.create(model="m/m", training_file=f.id, metadata={"team": "search"})
    assert tagged.metadata == {"team": "support"} and tagged.integrations[0].type == "tensorboard"
    found = client.fine_tuning.jobs.list(metadata={"team": "support"})
    assert [job.id for job in found.data] == [tagged.id]
    assert client.fine_tuning.jobs.list(metadata={"team": "support", "env": "prod"}).data == []
