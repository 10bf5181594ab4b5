from __future__ import annotations

import pytest

from hubtune.spec import Tuning
from worker.engine import methods
from worker.engine.methods import UnknownMethodError, available_methods, get_method, register
from worker.engine.methods.lora import Lora, auto_target_modules, build_lora
from worker.engine.trainer import load_base_model


def test_registry():
    assert get_method("lora").name == "lora"
    assert "lora" in available_methods()
    with pytest.raises(ValueError, match="already registered"):
        register(Lora)
    with pytest.raises(UnknownMethodError, match="unknown tuning method 'nope'; known: .*lora"):
        get_method("nope")


def test_register_decorator(monkeypatch):
    monkeypatch.setattr(methods, "_METHODS", dict(methods._METHODS))

    @register
    class Dummy:
        name = "dummy"

    assert isinstance(get_method("dummy"), Dummy)
    with pytest.raises(ValueError):
        register(Dummy)


def lora_modules(model):
    return sorted({n.rsplit(".", 2)[-2] for n, _ in model.named_modules() if n.endswith(".lora_A")})


def test_lora_bert_classification(tiny_bert):
    model, new = load_base_model(tiny_bert, task="sequence_classification", labels=["a", "b", "c"])
    assert new == ["classifier"]
    assert auto_target_modules(model) == ["query", "key", "value", "dense"]
    peft_model = build_lora(model, Tuning(r=4, alpha=8, dropout=0.1), task="sequence_classification", modules_to_save=new)
    cfg = peft_model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.task_type) == (4, 8, 0.1, "SEQ_CLS")
    assert set(cfg.target_modules) == {"query", "key", "value", "dense"}
    assert lora_modules(peft_model) == ["dense", "key", "query", "value"]
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    # The new head is trained in full; the base weights are frozen.
    assert any("classifier" in n and "modules_to_save" in n for n in trainable)
    assert not any(n.endswith("query.base_layer.weight") for n in trainable)
    assert all("lora_" in n or "classifier" in n for n in trainable)


def test_lora_llama_causal(tiny_llama):
    model, new = load_base_model(tiny_llama, task="causal_lm")
    assert new == []
    peft_model = build_lora(model, Tuning(), task="causal_lm")
    assert lora_modules(peft_model) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert peft_model.peft_config["default"].task_type == "CAUSAL_LM"
    assert not any("lm_head" in n for n, p in peft_model.named_parameters() if p.requires_grad)


def test_lora_gpt2_and_fallback():
    from torch import nn
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=32))
    assert auto_target_modules(gpt2) == ["c_attn", "c_proj", "c_fc"]

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
            self.mixer = nn.Linear(4, 4)
            self.classifier = nn.Linear(4, 2)

    # Every Linear outside the head, by leaf name...
    assert auto_target_modules(Toy()) == ["0", "mixer"]

    class Toy2(Toy):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(4, 4))])  # "blocks.0" is not a Linear

    # ...but a leaf name that a non-Linear module shares ("0") is spelled out in full.
    assert auto_target_modules(Toy2()) == ["mixer", "blocks.0.0", "encoder.0"]


def test_lora_explicit_targets_that_match_nothing(tiny_llama):
    model, _ = load_base_model(tiny_llama, task="causal_lm")
    with pytest.raises(ValueError, match="matched no layer.*q_proj"):
        build_lora(model, Tuning(target_modules=["nonexistent"]), task="causal_lm")
    model, _ = load_base_model(tiny_llama, task="causal_lm")
    peft_model = build_lora(model, Tuning(target_modules=["q_proj"]), task="causal_lm")
    assert lora_modules(peft_model) == ["q_proj"]
