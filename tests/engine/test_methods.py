from __future__ import annotations

import pytest
import torch

from hubtune.spec import Tuning
from worker.engine.methods import registry
from worker.engine.methods import MethodError, UnknownMethodError, available_methods, get_method, register
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
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))

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


# ---------------------------------------------------------------------------------------------
# The other methods: registry, refusals, option checks, adapters at init


def test_every_method_is_listed_and_found():
    names = available_methods()
    for name in ("lora", "qlora", "adapter", "full", "ia3", "loha", "lokr", "vera", "oft", "boft", "fourierft"):
        assert name in names
        assert get_method(name).name == name
    assert get_method("ia3") is get_method("ia3")  # registered once, on first use
    assert "adalora" not in names and "xlora" not in names


def test_unknown_and_unsupported_methods_name_the_field():
    with pytest.raises(MethodError) as err:
        get_method("nope")
    assert err.value.param == "tuning.type"
    assert all(name in str(err.value) for name in ("adapter", "full", "ia3", "lora", "qlora"))
    with pytest.raises(MethodError, match="update_and_allocate"):
        get_method("adalora")


def test_duplicate_registration_of_a_new_method_raises():
    from worker.engine.methods.adapter import Adapter
    from worker.engine.methods.full import Full

    for cls in (Adapter, Full):
        with pytest.raises(ValueError, match="already registered"):
            register(cls)
    with pytest.raises(ValueError, match="already registered"):
        register(get_method("loha"))


def test_qlora_is_refused_without_cuda(monkeypatch):
    qlora = get_method("qlora")
    with pytest.raises(MethodError, match="qlora needs a CUDA GPU; this worker has none — use lora") as err:
        qlora.check(Tuning(type="qlora"), task="causal_lm", device="cpu")
    assert err.value.param == "tuning.type"
    # A GPU but no bitsandbytes: refused as well, naming the package.
    import importlib.util

    from worker.engine.methods import qlora as qlora_module

    monkeypatch.setattr(qlora_module, "_cuda_available", lambda: True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a)
    )
    with pytest.raises(MethodError, match="bitsandbytes"):
        qlora.check(Tuning(type="qlora"), task="causal_lm", device="cuda")


def test_peft_options_are_checked_against_the_config():
    loha = get_method("loha")
    with pytest.raises(MethodError) as err:
        loha.check(Tuning(type="loha", options={"rank": 4}), task="causal_lm", device="cpu")
    assert err.value.param == "tuning.options.rank"
    assert "'rank'" in str(err.value) and "alpha" in str(err.value) and ", r, " in str(err.value)
    loha.check(Tuning(type="loha", options={"r": 4, "alpha": 8}), task="causal_lm", device="cpu")
    # Fields hubtune sets itself are not options.
    with pytest.raises(MethodError) as err:
        loha.check(Tuning(type="loha", options={"task_type": "SEQ_CLS"}), task="causal_lm", device="cpu")
    assert err.value.param == "tuning.options.task_type"
    # A peft config that refuses its values: its message, on tuning.options.
    with pytest.raises(MethodError, match="subset") as err:
        get_method("ia3").check(
            Tuning(type="ia3", options={"target_modules": ["q_proj"], "feedforward_modules": ["down_proj"]}),
            task="causal_lm", device="cpu",
        )
    assert err.value.param == "tuning.options"


def test_ia3_gets_targets_and_feedforward_modules(tiny_llama):
    model, _ = load_base_model(tiny_llama, task="causal_lm")
    peft_model = get_method("ia3").build(model, Tuning(type="ia3"), task="causal_lm")
    cfg = peft_model.peft_config["default"]
    assert set(cfg.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert set(cfg.feedforward_modules) == {"down_proj"}
    assert cfg.task_type == "CAUSAL_LM"


def _logits(model, input_ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits


@pytest.mark.parametrize("task", ["sequence_classification", "causal_lm"])
def test_adapter_starts_as_the_base_model(task, tiny_bert, tiny_llama):
    model_dir = tiny_bert if task == "sequence_classification" else tiny_llama
    model, new = load_base_model(model_dir, task=task, labels=["a", "b"])
    input_ids = torch.tensor([[2, 1000, 2000, 3000, 3]])
    before = _logits(model, input_ids)
    built = get_method("adapter").build(model, Tuning(type="adapter"), task=task, modules_to_save=new)
    assert torch.allclose(_logits(built, input_ids), before, atol=1e-5)
    trainable = {n for n, p in built.named_parameters() if p.requires_grad}
    head = {n for n in trainable if n.startswith("classifier.")}
    assert head == ({"classifier.weight", "classifier.bias"} if task == "sequence_classification" else set())
    adapters = trainable - head
    # Two adapters (after attention, after the feed-forward block) in each of the 2 layers.
    assert len({n.rsplit(".", 2)[0] for n in adapters}) == 2 * 2
    assert all(".hubtune_adapters." in n for n in adapters)
    # Default bottleneck: hidden (32) / 16.
    assert built.hubtune_adapter_config["bottleneck_size"] == 2
    # The adapters are in the forward path: each one, once moved off zero, changes the output.
    for name in sorted({n.rsplit(".", 2)[0] for n in adapters}):
        up = built.get_submodule(name).up
        with torch.no_grad():
            up.weight.normal_()  # not a constant: LayerNorm would cancel a uniform shift
        assert not torch.allclose(_logits(built, input_ids), before, atol=1e-3), name
        with torch.no_grad():
            up.weight.zero_()


def test_adapter_sizes_and_unsupported_architecture():
    from torch import nn

    from worker.engine.methods.adapter import bottleneck_size

    assert bottleneck_size(Tuning(type="adapter", reduction_factor=4), 32) == 8
    assert bottleneck_size(Tuning(type="adapter", bottleneck_size=5), 32) == 5
    assert bottleneck_size(Tuning(type="adapter"), 768) == 48

    class Toy(nn.Module):
        config = type("Config", (), {"model_type": "toy", "hidden_size": 4})()

        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(4, 4)])

    with pytest.raises(MethodError, match="does not know where to insert adapters into a Toy.*bert.*llama"):
        get_method("adapter").build(Toy(), Tuning(type="adapter"), task="causal_lm")


def test_load_adapter_model_restores_saved_adapters(tmp_path, tiny_bert):
    """What the model card shows: a fresh base model + load_adapter_model gives the tuned model."""
    from transformers import AutoModelForSequenceClassification

    from worker.engine.methods.adapter import load_adapter_model, save_adapter

    labels = ["a", "b"]
    model, new = load_base_model(tiny_bert, task="sequence_classification", labels=labels)
    tuned = get_method("adapter").build(model, Tuning(type="adapter", bottleneck_size=4, non_linearity="tanh"),
                                        task="sequence_classification", modules_to_save=new)
    torch.manual_seed(0)
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for p in tuned.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    input_ids = torch.tensor([[2, 1000, 2000, 3]])
    expected = _logits(tuned, input_ids)
    save_adapter(tuned, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_model.safetensors", "hubtune_adapter_config.json"]

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    loaded = load_adapter_model(base, tmp_path)
    assert torch.allclose(_logits(loaded, input_ids), expected, atol=1e-5)
    assert not any(p.requires_grad for p in loaded.parameters())
    # Adapters trained for another architecture are refused.
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match="trained on a bert model"):
        load_adapter_model(llama, tmp_path)


def test_lora_dora_and_rslora(tiny_llama):
    model, _ = load_base_model(tiny_llama, task="causal_lm")
    peft_model = build_lora(model, Tuning(r=4, alpha=8, use_dora=True, use_rslora=True), task="causal_lm")
    cfg = peft_model.peft_config["default"]
    assert cfg.use_dora and cfg.use_rslora
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_magnitude_vector" in n for n in trainable)  # DoRA's per-column magnitudes
    # rsLoRA scales by alpha / sqrt(r) instead of alpha / r.
    q_proj = peft_model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj")
    assert q_proj.scaling["default"] == pytest.approx(8 / 4**0.5)
