"""OpenAI's `integrations` on a job: mlflow (to the deployment's server or an allowed one, never a host a
user picks), tensorboard, and wandb only where the deployment enables it; each refusal a 400 naming the
field; accepted integrations are echoed on the job."""

from __future__ import annotations

from tests.server.apitest_helpers import assert_error, auth, make_env, upload

SERVER = "http://127.0.0.1:5000"


def _post(env, key, file_id, integrations):
    body = {"model": "m/m", "training_file": file_id, "integrations": integrations}
    return env.client.post("/v1/fine_tuning/jobs", headers=auth(key), json=body)


def test_accepted_integrations_are_stored_and_echoed(db_url, tmp_path):
    env = make_env(db_url, tmp_path / "data", mlflow_tracking_uri=SERVER,
                   mlflow_allowed_tracking_uris="https://mlflow.team.example/, http://10.0.0.5:5000")
    key = env.key()
    f = upload(env.client, key)["id"]
    asked = [{"type": "mlflow", "mlflow": {"experiment_name": "tickets", "run_name": "r1",
                                           "tracking_uri": "https://mlflow.team.example"}},
             {"type": "tensorboard"}]
    r = _post(env, key, f, asked)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["integrations"] == asked  # as OpenAI echoes them
    again = env.client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth(key)).json()
    assert again["integrations"] == job["integrations"]
    # No tracking_uri: the deployment's own server.
    assert _post(env, key, f, [{"type": "mlflow"}]).status_code == 200


def test_a_tracking_uri_outside_the_allow_list_is_refused(db_url, tmp_path):
    env = make_env(db_url, tmp_path / "data", mlflow_tracking_uri=SERVER,
                   mlflow_allowed_tracking_uris="https://mlflow.team.example")
    key = env.key()
    f = upload(env.client, key)["id"]
    param = "integrations[0].mlflow.tracking_uri"
    for uri in ("http://169.254.169.254/latest", "https://mlflow.team.example@evil.example",
                "https://mlflow.team.example:8443", "http://127.0.0.1:5001", "https://evil.example/mlflow.team.example"):
        error = assert_error(_post(env, key, f, [{"type": "mlflow", "mlflow": {"tracking_uri": uri}}]), 400,
                             param=param, code="invalid_integration")
        assert "mlflow.team.example" not in error["message"]  # the allow-list is not disclosed
    assert_error(_post(env, key, f, [{"type": "mlflow", "mlflow": {"tracking_uri": "file:///etc"}}]), 400,
                 param=param)


def test_no_tracking_server_and_wandb_off_say_so(db_url, tmp_path):
    env = make_env(db_url, tmp_path / "data")
    key = env.key()
    f = upload(env.client, key)["id"]
    error = assert_error(_post(env, key, f, [{"type": "mlflow"}]), 400,
                         param="integrations[0].mlflow.tracking_uri", code="invalid_integration")
    assert "HUBTUNE_MLFLOW_TRACKING_URI" in error["message"]
    wandb = {"type": "wandb", "wandb": {"project": "p", "tags": ["a"]}}
    error = assert_error(_post(env, key, f, [{"type": "tensorboard"}, wandb]), 400, param="integrations[1].type")
    assert "not enabled" in error["message"]
    on = make_env(db_url, tmp_path / "on", wandb_enabled=True)
    key = on.key()
    r = _post(on, key, upload(on.client, key)["id"], [wandb])
    assert r.status_code == 200, r.text
    assert r.json()["integrations"][0]["wandb"] == {"project": "p", "name": None, "entity": None, "tags": ["a"]}


def test_malformed_integrations_name_the_field(env):
    key = env.key()
    f = upload(env.client, key)["id"]
    assert_error(_post(env, key, f, [{"type": "comet"}]), 400, param="integrations[0].type")
    assert_error(_post(env, key, f, [{"type": "tensorboard", "mlflow": {}}]), 400, param="integrations[0]")
    assert_error(_post(env, key, f, [{"type": "wandb"}]), 400, param="integrations[0]")
    assert_error(_post(env, key, f, [{"type": "tensorboard"}, {"type": "tensorboard"}]), 400, param="integrations")
    error = assert_error(_post(env, key, f, [{"type": "mlflow", "mlflow": {"experiment": "x"}}]), 400)
    assert "integrations[0].mlflow.experiment" in error["message"]
    assert_error(_post(env, key, f, "mlflow"), 400, param="integrations")
