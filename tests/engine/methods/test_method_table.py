"""Every tuning method x task on tiny models: build, train a few steps with the real trainer, check
what trains, save, load back with the method's own `load` and get the trained model's outputs again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hubtune.spec import Hyperparameters, Training, Tuning
from tests.engine.conftest import RecordingHooks
from testkit.tiny_models import write_classification_jsonl, write_completion_jsonl
from worker.engine.hparams import resolve_hyperparameters
from worker.engine.methods.adapter import CONFIG_FILE, WEIGHTS_FILE
from worker.engine.trainer import TrainPlan, load_for_inference, reference_outputs, train

CLS, LM = "sequence_classification", "causal_lm"
N_EXAMPLES, BATCH, EPOCHS = 16, 8, 2  # 2 steps an epoch, 4 in all

# (case id, tuning, learning rate, tasks): every method on at least one task; the built-in ones on both.
CASES = [
    ("lora", Tuning(r=4, alpha=8, dropout=0.0), 1e-2, (CLS, LM)),
    ("lora-dora-rslora", Tuning(r=4, alpha=8, dropout=0.0, use_dora=True, use_rslora=True), 1e-2, (CLS,)),
    ("adapter", Tuning(type="adapter", bottleneck_size=8), 1e-2, (CLS, LM)),
    ("full", Tuning(type="full"), 1e-3, (CLS, LM)),
    ("ia3", Tuning(type="ia3"), 3e-2, (LM,)),
    ("loha", Tuning(type="loha", options={"r": 4, "alpha": 8}), 2e-2, (CLS,)),
    ("lokr", Tuning(type="lokr", options={"r": 4, "alpha": 8}), 2e-2, (LM,)),
    ("vera", Tuning(type="vera", options={"r": 16}), 5e-2, (CLS,)),
    ("oft", Tuning(type="oft", options={"r": 0, "oft_block_size": 8}), 1e-2, (LM,)),
    ("fourierft", Tuning(type="fourierft", options={"n_frequency": 32, "scaling": 100.0}), 2e-2, (CLS,)),
]
RUNS = [
    pytest.param(case, task, id=f"{case[0]}-{'cls' if task == CLS else 'lm'}") for case in CASES for task in case[3]
]
TABLE: list[dict] = []


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("method-data")
    return {
        CLS: write_classification_jsonl(tmp / "cls.jsonl", N_EXAMPLES, seed=0),
        LM: write_completion_jsonl(tmp / "lm.jsonl", N_EXAMPLES, seed=0),
    }


def method_plan(tmp: Path, *, task: str, model_dir: Path, train_file: Path, tuning: Tuning, lr: float) -> TrainPlan:
    # No held-out split, and no checkpoint or evaluation before the end: this is about the method.
    training = Training(learning_rate=lr, logging_steps=1, validation_split=0.0, save_steps=1000, eval_steps=1000)
    hp = resolve_hyperparameters(
        n_examples=N_EXAMPLES, task=task, tuning_type="lora",  # the rate is given: only its rules matter
        requested=Hyperparameters(n_epochs=EPOCHS, batch_size=BATCH), training=training,
    )
    return TrainPlan.in_folder(tmp, task=task, model_dir=model_dir, train_file=train_file, seed=0, tuning=tuning,
                               training=training, hyperparameters=hp)


def trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def expected_trainable(case_id: str, names: set[str], all_names: set[str], task: str) -> None:
    """Only the method's own parameters (and, for classification, the head) train."""
    method = case_id.split("-")[0]
    if method == "full":
        assert names == all_names
        return
    head = {n for n in names if ".classifier." in n or n.startswith("classifier.")}
    if task == CLS:
        assert head, "the classification head trains"
    else:
        assert not any("lm_head" in n or "embed_tokens" in n for n in names)
    marker = {
        "lora": "lora_", "adapter": ".hubtune_adapters.", "ia3": "ia3_l", "loha": "hada_", "lokr": "lokr_",
        "vera": "vera_lambda", "oft": "oft_", "fourierft": "fourierft_",
    }[method]
    assert names - head and all(marker in n for n in names - head), sorted(names - head)[:5]


@pytest.mark.parametrize(("case", "task"), RUNS)
def test_method_trains_and_reloads(case, task, tmp_path, tiny_bert, tiny_llama, data):
    case_id, tuning, lr, _ = case
    model_dir = tiny_bert if task == CLS else tiny_llama
    plan = method_plan(tmp_path, task=task, model_dir=model_dir, train_file=data[task], tuning=tuning, lr=lr)
    hooks = RecordingHooks()
    result = train(plan, hooks)

    losses = hooks.train_losses
    assert result.steps == len(losses) == N_EXAMPLES // BATCH * EPOCHS
    # The last epoch's mean loss is below the first's: it learns something in 8 steps.
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < first, losses
    assert hooks.started["trainable_params"] == result.trainable_params
    assert hooks.started["total_params"] == result.total_params
    if case_id == "full":
        assert result.trainable_params == result.total_params
    else:
        assert 0 < result.trainable_params < result.total_params / 5

    # The method's own load (through the trainer's loader) gives back the trained model's outputs...
    model, tokenizer = load_for_inference(model_dir=model_dir, adapter_dir=plan.output_dir, task=task)
    again = reference_outputs(model, tokenizer, task=task, inputs=result.reference["inputs"])
    assert torch.allclose(torch.tensor(again["logits"]), torch.tensor(result.reference["logits"]), atol=1e-4)
    if task == LM:
        assert again["token_ids"] == result.reference["token_ids"]
    # ...and what trained was only the method's parameters (plus the head).
    from worker.engine.methods import get_method
    from worker.engine.trainer import load_base_model, load_tokenizer

    base, new = load_base_model(
        model_dir, task=task, labels=["negative", "positive"] if task == CLS else None,
        tokenizer=load_tokenizer(model_dir),
    )
    all_names = {n for n, _ in base.named_parameters()}
    built = get_method(tuning.type).build(base, tuning, task=task, modules_to_save=new)
    expected_trainable(case_id, trainable_names(built), all_names, task)
    assert sum(p.numel() for p in built.parameters() if p.requires_grad) == result.trainable_params

    if tuning.type == "adapter":
        check_adapter_artifact(plan.output_dir, task=task, trainable=result.trainable_params)
    if tuning.type == "full":
        assert (plan.output_dir / "model.safetensors").is_file()

    TABLE.append({
        "method": case_id, "task": task, "trainable": result.trainable_params, "total": result.total_params,
        "loss_first": round(first, 4), "loss_last": round(last, 4),
    })


def check_adapter_artifact(out: Path, *, task: str, trainable: int) -> None:
    from safetensors.torch import load_file

    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["bottleneck_size"] == 8 and config["non_linearity"] == "gelu"
    assert config["positions"] == ["attention", "ffn"] and config["num_layers"] == 2
    assert config["base_model_type"] == ("bert" if task == CLS else "llama")
    assert config["modules_to_save"] == (["classifier"] if task == CLS else [])
    tensors = load_file(str(out / WEIGHTS_FILE))
    # Adapter (and head) weights only: 2 layers x 2 positions x (down, up) x (weight, bias) [+ head].
    assert len(tensors) == 2 * 2 * 2 * 2 + (2 if task == CLS else 0)
    assert sum(t.numel() for t in tensors.values()) == trainable
    assert not (out / "model.safetensors").exists()


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    """The method x task table the tests filled, printed once the module's tests ran, in whatever order
    they ran (pytest -s shows it): a report, not a test."""
    yield
    if TABLE:
        print("\nmethod x task: trainable/total params, mean train loss first epoch -> last epoch")
        for row in TABLE:
            print(
                f"{row['method']:18} {row['task']:24} {row['trainable']:>8}/{row['total']:<8} "
                f"{row['loss_first']:.4f} -> {row['loss_last']:.4f}"
            )
