"""The estimator's weight, gradient and optimizer bytes equal what torch allocates, for tiny models
built the way the worker builds them (load_base_model + the tuning method), after one real step."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from hubtune.estimator import estimate
from hubtune.spec import Tuning
from worker.engine.methods import get_method
from worker.engine.trainer import load_base_model

LABELS = ["a", "b", "c"]
BATCH, SEQ = 2, 12


def build(model_dir, *, task: str, tuning: Tuning):
    model, new_modules = load_base_model(model_dir, task=task, labels=LABELS if task == "sequence_classification" else None)
    return get_method(tuning.type).build(model, tuning, task=task, modules_to_save=new_modules)


def measured(model, *, task: str, vocab: int) -> dict[str, int]:
    torch.manual_seed(0)
    ids = torch.randint(5, vocab, (BATCH, SEQ))
    labels = torch.tensor([0, 2]) if task == "sequence_classification" else ids.clone()
    model.train()
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    optimizer.step()
    states = [t for state in optimizer.state.values() for key, t in state.items() if key != "step"]
    assert {k for state in optimizer.state.values() for k in state} == {"step", "exp_avg", "exp_avg_sq"}
    return {
        "weights": sum(p.numel() * p.element_size() for p in model.parameters()),
        "gradients": sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None),
        "optimizer": sum(t.numel() * t.element_size() for t in states),
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in trainable),
        "with_grad": sum(1 for p in trainable if p.grad is not None),
        "n_trainable": len(trainable),
    }


CASES = [
    ("tiny_bert", "sequence_classification", Tuning(type="lora", r=4)),
    ("tiny_bert", "sequence_classification", Tuning(type="full")),
    ("tiny_bert", "sequence_classification", Tuning(type="lora", r=8, target_modules=["query", "value"], use_dora=True)),
    ("tiny_bert", "sequence_classification", Tuning(type="adapter")),
    ("tiny_llama", "causal_lm", Tuning(type="adapter", bottleneck_size=5)),
    ("tiny_llama", "causal_lm", Tuning(type="lora", r=4)),
    ("tiny_llama", "causal_lm", Tuning(type="full")),
    ("tiny_llama", "sequence_classification", Tuning(type="lora", r=2)),
]


@pytest.mark.parametrize(("fixture", "task", "tuning"), CASES, ids=lambda v: getattr(v, "type", str(v)))
def test_weights_gradients_optimizer_bytes_equal_torch(request, fixture, task, tuning):
    model_dir = request.getfixturevalue(fixture)
    config = json.loads((model_dir / "config.json").read_text())
    model = build(model_dir, task=task, tuning=tuning)
    got = measured(model, task=task, vocab=config["vocab_size"])
    # Every trainable parameter took part in the step (else the gradient comparison would be lenient).
    assert got["with_grad"] == got["n_trainable"]

    est = estimate(config=config, tuning=tuning, task=task, num_labels=len(LABELS), precision="fp32",
                   batch_size=BATCH, seq_len=SEQ)

    assert est.params_total == got["total"]
    assert est.params_trainable == got["trainable"]
    assert est.weights_bytes == got["weights"]
    assert est.gradients_bytes == got["gradients"]
    assert est.optimizer_bytes == got["optimizer"]
    assert est.activations_bytes > 0 and est.total_bytes > est.weights_bytes + est.optimizer_bytes


def test_full_tuning_trains_every_parameter_and_lora_a_small_share(tiny_llama):
    config = json.loads((tiny_llama / "config.json").read_text())
    kw = dict(config=config, task="causal_lm", batch_size=1, seq_len=8)
    full, lora = estimate(tuning=Tuning(type="full"), **kw), estimate(tuning=Tuning(type="lora"), **kw)
    assert full.params_trainable == full.params_total
    assert lora.params_trainable < full.params_trainable / 5
    assert lora.optimizer_bytes < full.optimizer_bytes


def test_estimator_does_not_import_torch():
    code = "import sys, hubtune.estimator; print(any(m.split('.')[0] in ('torch', 'transformers') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
