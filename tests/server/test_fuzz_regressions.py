"""What the schemathesis run found, kept as plain tests: NUL characters in hub text fields were 500s."""

from __future__ import annotations

from tests.server.apitest_helpers import assert_error, auth


def test_nul_in_credential_name_is_a_400(env):
    key = env.key()
    r = env.client.post("/v1/hub/credentials", headers=auth(key), json={"name": "a\u0000b", "token": "hf_x"})
    assert_error(r, 400, param="name")
    assert env.client.get("/v1/hub/credentials", headers=auth(key)).json()["data"] == []


def test_nul_in_trigger_fields_is_a_400(env):
    key = env.key()
    job = {"model": "org/model", "training_file": "hf://datasets/org/data@main/train.jsonl"}
    for field, body in (
        ("repo_id", {"repo_id": "org/da\u0000ta", "job": job}),
        ("path_pattern", {"repo_id": "org/data", "path_pattern": "*\u0000", "job": job}),
    ):
        r = env.client.post("/v1/hub/triggers", headers=auth(key), json=body)
        assert_error(r, 400, param=field)
