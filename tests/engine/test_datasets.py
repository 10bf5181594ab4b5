from __future__ import annotations

import torch

from worker.engine.data import Examples
from worker.engine.datasets import (
    IGNORE_INDEX,
    PadCollator,
    build_dataset,
    encode_example,
    probe_input,
)


def trained_text(tokenizer, feature) -> str:
    return tokenizer.decode([t for t in feature["labels"] if t != IGNORE_INDEX])


def test_classification_encoding(bert_tokenizer):
    f = encode_example(
        {"text": "great film", "label": "pos"}, fmt="classification", tokenizer=bert_tokenizer,
        label2id={"neg": 0, "pos": 1}, max_seq_length=8,
    )
    assert bert_tokenizer.convert_ids_to_tokens(f["input_ids"]) == ["[CLS]", "great", "film", "[SEP]"]
    assert f["attention_mask"] == [1, 1, 1, 1] and f["labels"] == 1
    f = encode_example(
        {"text": "great film " * 20, "label": "neg"}, fmt="classification", tokenizer=bert_tokenizer,
        label2id={"neg": 0, "pos": 1}, max_seq_length=8,
    )
    assert len(f["input_ids"]) == 8 and f["labels"] == 0


def test_chat_labels_cover_only_assistant_tokens(llama_tokenizer):
    tok = llama_tokenizer
    row = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "name a fruit"},
            {"role": "assistant", "content": "banana"},
            {"role": "user", "content": "another one"},
            {"role": "assistant", "content": "green apple"},
        ]
    }
    f = encode_example(row, fmt="chat", tokenizer=tok, label2id=None, max_seq_length=None)
    tokens = tok.convert_ids_to_tokens(f["input_ids"])
    assert tokens[0] == "[CLS]"  # bos added: the template does not render one
    trained = [tokens[i] for i, label in enumerate(f["labels"]) if label != IGNORE_INDEX]
    assert trained == ["banana", "[SEP]", "green", "apple", "[SEP]"]
    # Labels equal the ids where trained.
    for i, label in enumerate(f["labels"]):
        assert label in (IGNORE_INDEX, f["input_ids"][i])
    assert "user" in tokens and "fruit" in tokens  # the rest is there, only masked


def test_chat_weight_zero_messages_are_not_trained(llama_tokenizer):
    row = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "draft answer", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "final answer"},
        ]
    }
    f = encode_example(row, fmt="chat", tokenizer=llama_tokenizer, label2id=None, max_seq_length=None)
    assert trained_text(llama_tokenizer, f) == "final answer [SEP]"
    assert "draft" in llama_tokenizer.decode(f["input_ids"])


def test_completion_labels_cover_completion_and_eos(llama_tokenizer):
    tok = llama_tokenizer
    f = encode_example(
        {"prompt": "colour red means", "completion": " red red"}, fmt="completion", tokenizer=tok,
        label2id=None, max_seq_length=None,
    )
    tokens = tok.convert_ids_to_tokens(f["input_ids"])
    assert tokens == ["[CLS]", "colour", "red", "means", "red", "red", "[SEP]"]
    assert f["labels"][:4] == [IGNORE_INDEX] * 4
    assert f["labels"][4:] == f["input_ids"][4:]
    # Truncation keeps the start.
    f = encode_example(
        {"prompt": "colour red means", "completion": " red red"}, fmt="completion", tokenizer=tok,
        label2id=None, max_seq_length=5,
    )
    assert len(f["input_ids"]) == 5 and f["labels"][-1] == f["input_ids"][-1]


def test_probe_input_is_the_prompt(llama_tokenizer):
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    assert probe_input(row, fmt="chat", tokenizer=llama_tokenizer) == "<|user|>\nhi\n<|assistant|>\n"
    assert probe_input({"prompt": "p", "completion": "c"}, fmt="completion", tokenizer=llama_tokenizer) == "p"
    assert probe_input({"text": "t", "label": "a"}, fmt="classification", tokenizer=llama_tokenizer) == "t"


def test_collator_pads_ids_mask_and_labels():
    collate = PadCollator(pad_token_id=0)
    batch = collate(
        [
            {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
            {"input_ids": [8], "attention_mask": [1], "labels": [8]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    batch = collate([{"input_ids": [1, 2], "attention_mask": [1, 1], "labels": 1}, {"input_ids": [3], "attention_mask": [1], "labels": 0}])
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]


def test_build_dataset_uses_examples_labels(bert_tokenizer):
    ex = Examples(
        task="sequence_classification", format="classification",
        rows=[{"text": "a", "label": "z"}, {"text": "b", "label": "y"}], labels=["y", "z"],
    )
    ds = build_dataset(ex, tokenizer=bert_tokenizer, max_seq_length=16)
    assert [ds[i]["labels"] for i in range(2)] == [1, 0]
    assert ds.skipped == [] and ds.tokens == 6
