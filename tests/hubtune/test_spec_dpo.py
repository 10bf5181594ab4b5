"""method type "dpo" in the job request (OpenAI's shape), "reinforcement" refused with a sentence, and the
memory estimate of a DPO job against the same SFT job."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hubtune.estimator import estimate_request
from hubtune.spec import JobRequest

LLAMA = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
         "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}


def request(**body) -> JobRequest:
    return JobRequest(model="HuggingFaceTB/SmolLM2-135M-Instruct", training_file="file-1", **body)


def refused(**body) -> str:
    with pytest.raises(ValidationError) as info:
        request(**body)
    return str(info.value)


def test_dpo_method_in_openai_shape():
    job = request(method={"type": "dpo", "dpo": {"hyperparameters": {
        "beta": 0.25, "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}}})
    assert job.method_type == "dpo"
    hp = job.effective_hyperparameters()
    assert (hp.beta, hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (0.25, 2, 4, 0.5)
    assert request(method={"type": "dpo"}).effective_hyperparameters().beta == "auto"
    assert request().method_type == "supervised"


@pytest.mark.parametrize("beta", [0, -1, 10.5, "high"])
def test_beta_out_of_range_is_refused(beta):
    assert "beta" in refused(method={"type": "dpo", "dpo": {"hyperparameters": {"beta": beta}}})


def test_reinforcement_is_refused_saying_it_is_not_supported():
    for method in ({"type": "reinforcement"}, {"type": "reinforcement", "reinforcement": {"grader": {}}}):
        assert "method type 'reinforcement' is not supported" in refused(method=method)


@pytest.mark.parametrize("body, words", [
    ({"method": {"type": "dpo", "supervised": {}}}, "method.supervised was given but method.type is 'dpo'"),
    ({"method": {"type": "supervised", "dpo": {}}}, "method.dpo was given but method.type is 'supervised'"),
    ({"method": {"type": "dpo"}, "task": "sequence_classification"}, "task must be causal_lm"),
    ({"method": {"type": "dpo"}, "tuning": {"type": "adapter"}}, "tuning.type lora, qlora, full"),
    ({"method": {"type": "dpo"}, "training": {"packing": True}}, "training.packing does not apply"),
    ({"method": {"type": "dpo"}, "training": {"n_gpus": 2}}, "training.n_gpus > 1 is not supported"),
    ({"method": {"type": "dpo"}, "training": {"goal": {"metric": "valid_loss", "max": 1}}}, "training.goal does not"),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"gamma": 1}}}}, "gamma"),
])
def test_dpo_requests_that_cannot_work_are_refused(body, words):
    assert words in refused(**body)


def test_dpo_estimate_counts_both_replies_and_for_full_the_reference_copy():
    def est(method, tuning):
        return estimate_request(request(method={"type": method}, tuning={"type": tuning},
                                        training={"max_seq_length": 256},
                                        hyperparameters={"batch_size": 4}),
                                config=LLAMA, gpu=True, task="causal_lm")

    for tuning in ("lora", "full"):
        sft, dpo = est("supervised", tuning), est("dpo", tuning)
        assert dpo.method == "dpo" and "DPO" in dpo.summary()
        # chosen + rejected: at least twice the supervised activations, plus the reference's passes
        assert dpo.activations_bytes > 2 * sft.activations_bytes
        assert dpo.gradients_bytes == sft.gradients_bytes and dpo.optimizer_bytes == sft.optimizer_bytes
    lora_sft, lora_dpo, full_sft, full_dpo = est("supervised", "lora"), est("dpo", "lora"), est("supervised", "full"), est("dpo", "full")
    assert lora_dpo.weights_bytes == lora_sft.weights_bytes  # the adapter switched off: no second model
    assert full_dpo.weights_bytes - full_sft.weights_bytes == 4 * full_sft.params_total  # a frozen fp32 copy
