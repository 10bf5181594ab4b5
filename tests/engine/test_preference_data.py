"""OpenAI's preference JSONL (method "dpo"): read into pairs, bad rows refused naming the line, pairs
rendered with the chat template, and the data report's counts."""

from __future__ import annotations

import json

import pytest

from testkit.tiny_models import make_tiny_llama, preference_rows
from worker.engine.data import PREFERENCE, DataError, check_method, load_examples
from worker.engine.data_report import data_report
from worker.engine.pairs import encode_pair, text_pair
from worker.engine.loading import load_tokenizer

PAIR = {"input": {"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}]},
        "preferred_output": [{"role": "assistant", "content": "hello there"}],
        "non_preferred_output": [{"role": "assistant", "content": "go away"}]}


def write(tmp_path, rows, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def with_(**changes):
    row = json.loads(json.dumps(PAIR))
    for key, value in changes.items():
        if value is None:
            row.pop(key)
        else:
            row[key] = value
    return row


def test_preference_rows_are_read_as_causal_lm_pairs(tmp_path):
    examples = load_examples(write(tmp_path, [PAIR, "", PAIR]), task=None, param="training_file")
    assert examples.format == PREFERENCE and examples.task == "causal_lm"
    assert examples.lines == [1, 3]
    assert examples.rows[0] == {"input": PAIR["input"]["messages"], "preferred_output": "hello there",
                                "non_preferred_output": "go away"}


@pytest.mark.parametrize("bad, words", [
    (with_(input={"text": "hi"}), "input must be an object with 'messages'"),
    (with_(input={"messages": []}), "input.messages must be a non-empty list"),
    (with_(input={"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
     "must end with a user message"),
    (with_(input={"messages": [{"role": "robot", "content": "a"}]}), "input.messages[0].role must be one of"),
    (with_(preferred_output=[{"role": "user", "content": "x"}]), "preferred_output[0].role must be 'assistant'"),
    (with_(non_preferred_output=[]), "non_preferred_output must be a list of one assistant message, got 0"),
    (with_(non_preferred_output="no"), "non_preferred_output must be a list of one assistant message, got string"),
    (with_(preferred_output=[{"role": "assistant", "content": 3}]), "preferred_output[0].content must be a string"),
    (with_(preferred_output=[{"role": "assistant", "content": " "}]), "preferred_output[0].content must not be empty"),
    (with_(non_preferred_output=PAIR["preferred_output"]), "are the same reply"),
    (with_(non_preferred_output=None), "missing column 'non_preferred_output'"),
])
def test_a_bad_row_is_refused_naming_its_line(tmp_path, bad, words):
    with pytest.raises(DataError) as info:
        load_examples(write(tmp_path, [PAIR, PAIR, bad]), task=None, param="training_file")
    assert info.value.line == 3 and info.value.param == "training_file"
    assert info.value.message.startswith("line 3: ") and words in info.value.message, info.value.message


def test_pairs_and_chats_do_not_mix_and_must_match_the_method(tmp_path):
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    with pytest.raises(DataError) as mixed:
        load_examples(write(tmp_path, [PAIR, chat]), task=None, param="training_file")
    assert mixed.value.line == 2 and "all lines must share one format" in mixed.value.message
    pairs = load_examples(write(tmp_path, [PAIR]), task=None, param="training_file")
    chats = load_examples(write(tmp_path, [chat], name="chat.jsonl"), task=None, param="training_file")
    check_method(pairs, method="dpo", param="training_file")
    with pytest.raises(DataError) as sft:
        check_method(pairs, method="supervised", param="training_file")
    assert sft.value.param == "method" and "method type 'dpo'" in sft.value.message
    with pytest.raises(DataError) as dpo:
        check_method(chats, method="dpo", param="validation_file")
    assert dpo.value.param == "validation_file" and "preference pairs" in dpo.value.message
    with pytest.raises(DataError) as task:
        load_examples(write(tmp_path, [PAIR]), task="sequence_classification", param="training_file")
    assert task.value.param == "task"


def test_pairs_render_with_the_chat_template_and_fit_max_length(tmp_path):
    tokenizer = load_tokenizer(make_tiny_llama(tmp_path / "llama"))
    row = load_examples(write(tmp_path, [PAIR]), task=None, param="training_file").rows[0]
    pair = text_pair(tokenizer, row)
    whole = tokenizer.apply_chat_template(PAIR["input"]["messages"] + PAIR["preferred_output"], tokenize=False)
    # The prompt ends where the assistant's turn begins; prompt + chosen is the whole conversation.
    assert whole.startswith(pair["prompt"]) and (pair["prompt"] + pair["chosen"]) == whole.rstrip("\n")
    assert "hello there" in pair["chosen"] and "go away" in pair["rejected"]
    enc = encode_pair(tokenizer, pair, max_length=None)
    cut = encode_pair(tokenizer, pair, max_length=len(enc["prompt_ids"]) + 2)
    assert len(cut["chosen_ids"]) == 2 and cut["chosen_ids"] == enc["chosen_ids"][:2]


def test_data_report_counts_both_replies_of_each_pair(tmp_path):
    tokenizer = load_tokenizer(make_tiny_llama(tmp_path / "llama"))
    examples = load_examples(write(tmp_path, preference_rows(6)), task=None, param="training_file")
    report = data_report(examples, tokenizer=tokenizer, max_seq_length=256)
    assert report["format"] == "preference" and report["examples"] == 6
    assert report["tokens"] > report["trained_tokens"] > 0 and report["truncated_examples"] == 0
    short = data_report(examples, tokenizer=tokenizer, max_seq_length=8)
    assert short["truncated_examples"] == 6 and short["untrained_examples"] == 6
    assert any("only 6 examples" in w for w in report["warnings"])
