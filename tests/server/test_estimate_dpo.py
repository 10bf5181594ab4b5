"""The estimate endpoint and routing know DPO: the same QLoRA request on llama-7b fits a 24 GiB GPU as an
SFT job but, with DPO's chosen + rejected replies and the reference's passes, needs the 80 GiB queue."""

from __future__ import annotations

from tests.server.test_estimate import GiB, hub, post, workers  # noqa: F401 (fixtures)

BODY = {"tuning": {"type": "qlora"}, "training": {"max_seq_length": 512}}


def test_dpo_job_routes_to_the_queue_its_bigger_estimate_fits(env, hub, workers):  # noqa: F811
    workers("l4", "gpu-24g", 24)
    workers("h100", "gpu-80g", 80)
    key = env.key()
    sft = post(env, key, **BODY, hyperparameters={"batch_size": 2}).json()
    dpo = post(env, key, **BODY, method={"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 2}}}).json()
    assert sft["queue"] == "gpu-24g" and sft["total_bytes"] <= 24 * GiB
    assert dpo["queue"] == "gpu-80g" and 24 * GiB < dpo["total_bytes"] <= 80 * GiB
    assert dpo["parts"]["activations_bytes"] > 2 * sft["parts"]["activations_bytes"]
    assert dpo["parts"]["weights_bytes"] == sft["parts"]["weights_bytes"]  # the adapter off: no second model
