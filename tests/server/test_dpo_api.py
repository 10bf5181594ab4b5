"""POST /v1/fine_tuning/jobs with method "dpo": the job object echoes OpenAI's method shape (and the
resolved beta once prepare recorded it); "reinforcement" and DPO requests that cannot train are 400s
naming the field."""

from __future__ import annotations

from hubtune.models import Job
from tests.server.apitest_helpers import assert_error, auth, create_job, upload

DPO = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}}


def test_dpo_job_echoes_its_method_in_openai_shape(env):
    key = env.key("acme")
    f = upload(env.client, key)
    job = create_job(env.client, key, f["id"], model="HuggingFaceTB/SmolLM2-135M-Instruct", method=DPO)
    assert job["method"] == {"type": "dpo", "dpo": {"hyperparameters": {
        "n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto", "beta": 0.2}}}
    assert job["hyperparameters"] == {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}
    with env.session() as s:  # what prepare records: the resolved values come back in the same shape
        s.get(Job, job["id"]).hyperparameters = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0,
                                                 "learning_rate": 1e-4, "beta": 0.2}
        s.commit()
    again = env.client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth(key)).json()
    assert again["method"]["dpo"]["hyperparameters"]["batch_size"] == 4 and "supervised" not in again["method"]
    supervised = create_job(env.client, key, f["id"])
    assert supervised["method"]["type"] == "supervised" and "dpo" not in supervised["method"]


def test_reinforcement_and_unfit_dpo_requests_are_400s_naming_the_field(env):
    key = env.key("acme")
    f = upload(env.client, key)

    def post(**body):
        return env.client.post("/v1/fine_tuning/jobs", headers=auth(key),
                               json={"model": "m", "training_file": f["id"], **body})

    body = assert_error(post(method={"type": "reinforcement"}), 400, param="method")
    assert "'reinforcement' is not supported" in body["message"]
    assert_error(post(method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}), 400,
                 param="method.dpo.hyperparameters.beta")
    body = assert_error(post(method={"type": "dpo"}, tuning={"type": "adapter"}), 400)
    assert "tuning.type lora, qlora, full" in body["message"]
