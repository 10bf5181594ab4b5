"""What a saved artifact carries for its users: a classifier's label maps in config.json (peft sizes the
base model's head from what its caller passes, never from the adapter), a causal LM's chat template."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from hubtune.spec import Training, Tuning
from tests.engine.test_lora_train import resolved_plan
from testkit.tiny_models import TINY_CHAT_TEMPLATE, write_chat_jsonl, write_jsonl
from worker.engine.trainer import NullHooks, load_tokenizer, train

ROWS = [{"text": f"{word} item {i}", "label": word} for i in range(8) for word in ("red", "green", "blue")]
ID2LABEL = {0: "blue", 1: "green", 2: "red"}


@pytest.mark.parametrize("kind", ["lora", "adapter", "full"])
def test_a_three_class_artifact_names_its_labels_in_config_json(tmp_path, tiny_bert, kind):
    plan = resolved_plan(tmp_path, tiny_bert, write_jsonl(tmp_path / "three.jsonl", ROWS), task="sequence_classification",
                     n_epochs=1, tuning=Tuning(type=kind), training=Training(learning_rate=1e-2, max_steps=2))
    train(plan, NullHooks())
    config = AutoConfig.from_pretrained(plan.output_dir)
    assert config.num_labels == 3 and config.id2label == ID2LABEL
    assert config.label2id == {label: i for i, label in ID2LABEL.items()}
    if kind == "lora":
        from peft import AutoPeftModelForSequenceClassification

        # What the card's snippet does: the label maps from config.json size the head; nothing else to fix.
        model = AutoPeftModelForSequenceClassification.from_pretrained(
            plan.output_dir, id2label=config.id2label, label2id=config.label2id)
        tokenizer = load_tokenizer(plan.output_dir)
        assert model(**tokenizer("red item", return_tensors="pt")).logits.shape[-1] == 3
        assert model.config.id2label == ID2LABEL


def test_a_causal_artifact_carries_the_chat_template_it_trained_with(tmp_path, tiny_llama):
    plan = resolved_plan(tmp_path, tiny_llama, write_chat_jsonl(tmp_path / "chat.jsonl", 8), task="causal_lm",
                     n_epochs=1, training=Training(learning_rate=1e-2, max_steps=1, max_seq_length=64))
    train(plan, NullHooks())
    assert load_tokenizer(plan.output_dir).chat_template == TINY_CHAT_TEMPLATE
    assert not (plan.output_dir / "config.json").exists()  # an adapter without labels stays a plain peft adapter
    assert json.loads((plan.output_dir / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
