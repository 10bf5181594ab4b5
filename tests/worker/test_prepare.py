"""worker/prepare.py: what it refuses before a job may train (unsafe weights, custom code, bad methods)."""

from __future__ import annotations

import pytest

from hubtune.models import Job
from hubtune.settings import get_settings
from hubtune.spec import Tuning
from tests.server.apitest_helpers import auth, create_job, upload
from tests.worker.hub_world import OWNER_TOKEN, world  # noqa: F401  (world: a fixture)
from worker.engine.methods import MethodError

@pytest.mark.parametrize("files, code", [
    ({"config.json": b"{}", "pytorch_model.bin": b"pickle"}, "unsafe_weights"),
    ({"config.json": b'{"auto_map": {"AutoModel": "modeling_x.XModel"}}', "model.safetensors": b"w",
      "modeling_x.py": b"import os"}, "remote_code_not_allowed"),
])
def test_prepare_refuses_pickled_weights_and_custom_code(world, files, code):
    from worker.prepare import run_prepare

    env, server = world
    key = env.key()
    env.client.post("/v1/hub/credentials", headers=auth(key), json={"token": OWNER_TOKEN})
    server.hub.create_repo("acme/risky")
    server.hub.commit("acme/risky", files=files, message="m", branch="main")
    job = create_job(env.client, key, upload(env.client, key)["id"], model="acme/risky")
    run_prepare(job["id"], get_settings())
    with env.session() as s:
        row = s.get(Job, job["id"])
        assert row.status == "failed" and row.error["code"] == code and row.error["param"] == "model", row.error


def test_prepare_fails_a_bad_method_with_its_field():
    from hubtune.spec import JobRequest
    from worker.failures import job_error
    from worker.prepare import _check_method

    for tuning, param, text in (
        ({"type": "nope"}, "tuning.type", "known: "),
        ({"type": "vera", "options": {"rank": 2}}, "tuning.options.rank", "projection_prng_key"),
    ):
        # A job stored before the API refused unknown types still fails at prepare, naming the field.
        request = JobRequest(model="org/model", training_file="file-1").model_copy(
            update={"tuning": Tuning.model_construct(**{**Tuning().model_dump(), **tuning})})
        with pytest.raises(MethodError) as err:
            _check_method(request, task="causal_lm")
        error = job_error(err.value)
        assert error["code"] == "invalid_tuning" and error["param"] == param and text in error["message"]
