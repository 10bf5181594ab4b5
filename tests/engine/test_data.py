from __future__ import annotations

import json

import pytest

from worker.engine.data import DataError, Examples, check_validation, load_examples
from worker.engine.data_report import data_report
from worker.engine.datasets import IGNORE_INDEX, build_dataset


def write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


CLS = {"text": "great film", "label": "pos"}
CLS2 = {"text": "awful film", "label": "neg"}
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
COMP = {"prompt": "2+2=", "completion": " 4"}


def fails(tmp_path, lines, *, task=None, param="training_file"):
    with pytest.raises(DataError) as info:
        load_examples(write(tmp_path, lines), task=task, param=param)
    return info.value


# -- format inference -------------------------------------------------------------------------


def test_classification_inferred(tmp_path):
    ex = load_examples(write(tmp_path, [CLS, "", CLS2, {"text": "ok", "label": "pos", "id": 3}]), task=None, param="training_file")
    assert (ex.task, ex.format) == ("sequence_classification", "classification")
    assert ex.labels == ["neg", "pos"]
    assert ex.rows[2] == {"text": "ok", "label": "pos"}  # extra keys dropped
    assert ex.lines == [1, 3, 4]  # the blank line 2 is counted


def test_integer_labels_are_strings_sorted_numerically(tmp_path):
    rows = [{"text": f"t{i}", "label": i} for i in (10, 2, 1, 2)]
    ex = load_examples(write(tmp_path, rows), task="sequence_classification", param="training_file")
    assert ex.labels == ["1", "2", "10"]
    assert ex.label2id == {"1": 0, "2": 1, "10": 2}


def test_chat_and_completion_infer_causal_lm(tmp_path):
    ex = load_examples(write(tmp_path, [CHAT, CHAT], "chat.jsonl"), task=None, param="training_file")
    assert (ex.task, ex.format, ex.labels) == ("causal_lm", "chat", [])
    ex = load_examples(write(tmp_path, [COMP], "comp.jsonl"), task="causal_lm", param="training_file")
    assert (ex.task, ex.format) == ("causal_lm", "completion")
    assert ex.rows == [{"prompt": "2+2=", "completion": " 4"}]


def test_task_that_does_not_fit_the_format(tmp_path):
    err = fails(tmp_path, [CLS, CLS2], task="causal_lm")
    assert err.code == "invalid_task" and err.param == "task" and err.line is None
    assert "causal_lm" in str(err) and "sequence_classification" in str(err)
    err = fails(tmp_path, [CHAT], task="sequence_classification")
    assert err.code == "invalid_task" and "'sequence_classification'" in str(err)


# -- every DataError names its code and line ----------------------------------------------------


@pytest.mark.parametrize(
    "lines, code, line, words",
    [
        ([CLS, CLS2, "", "", "", "", '{"text": "x", "label": '], "invalid_file_format", 7, "not valid JSON"),
        ([CLS, "[1, 2]"], "invalid_file_format", 2, "expected a JSON object, got list"),
        ([CLS, '"just a string"'], "invalid_file_format", 2, "got string"),
        ([{"foo": 1}], "invalid_file_format", 1, "unrecognised columns ('foo')"),
        ([CLS, CLS2, CHAT], "invalid_file_format", 3, "all lines must share one format"),
        ([CLS, CLS2, {"text": "no label"}], "missing_column", 3, "missing column 'label'"),
        ([{"label": "x"}], "missing_column", 1, "missing column 'text'"),
        ([COMP, {"prompt": "p"}], "missing_column", 2, "missing column 'completion'"),
        ([CLS, {"text": "   ", "label": "pos"}], "invalid_text", 2, "text must not be empty"),
        ([CLS, {"text": 5, "label": "pos"}], "invalid_text", 2, "text must be a string, got integer"),
        ([COMP, {"prompt": "p", "completion": ""}], "invalid_text", 2, "completion must not be empty"),
        ([COMP, {"prompt": None, "completion": "c"}], "invalid_text", 2, "prompt must be a string"),
        ([CLS, CLS2, CLS, CLS, {"text": "x", "label": ["a"]}], "invalid_label", 5,
         "label must be a string or an integer, got list"),
        ([CLS, {"text": "x", "label": True}], "invalid_label", 2, "got boolean"),
        ([CLS, {"text": "x", "label": 1.5}], "invalid_label", 2, "got number"),
        ([CLS, {"text": "x", "label": {"a": 1}}], "invalid_label", 2, "got object"),
        ([CLS, {"text": "x", "label": None}], "invalid_label", 2, "got null"),
        ([CLS, {"text": "x", "label": ""}], "invalid_label", 2, "label must not be empty"),
        ([{"messages": "hi"}], "invalid_messages", 1, "messages must be a list"),
        ([{"messages": []}], "invalid_messages", 1, "messages must not be empty"),
        ([CHAT, {"messages": [{"role": "user", "content": "hi"}]}], "invalid_messages", 2,
         "at least one assistant message"),
        ([{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}],
         "invalid_messages", 1, "messages[0].role must be one of system, user, assistant, got 'robot'"),
        ([{"messages": [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "y"}]}],
         "invalid_messages", 1, "messages[0].content must be a string, got list"),
        ([{"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}],
         "invalid_messages", 1, "messages[0] has no 'content'"),
        ([{"messages": ["hi", {"role": "assistant", "content": "y"}]}],
         "invalid_messages", 1, "messages[0] must be an object"),
        ([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}],
         "invalid_messages", 1, "at least one assistant message"),
    ],
)
def test_line_errors(tmp_path, lines, code, line, words):
    err = fails(tmp_path, lines)
    assert err.code == code
    assert err.line == line
    assert err.param == "training_file"
    assert str(err).startswith(f"line {line}: ")
    assert words in str(err)


def test_empty_and_blank_files(tmp_path):
    for content in ("", "\n\n  \n"):
        path = tmp_path / "empty.jsonl"
        path.write_text(content)
        with pytest.raises(DataError) as info:
            load_examples(path, task=None, param="validation_file")
        assert info.value.code == "empty_file" and info.value.param == "validation_file"
        assert info.value.line is None


def test_not_utf8_and_missing_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(CLS).encode() + b"\n" + b'{"text": "\xff\xfe", "label": "a"}\n')
    with pytest.raises(DataError) as info:
        load_examples(path, task=None, param="training_file")
    assert (info.value.code, info.value.line) == ("invalid_file_format", 2)
    assert "UTF-8" in str(info.value)
    with pytest.raises(DataError) as info:
        load_examples(tmp_path / "nope.jsonl", task=None, param="training_file")
    assert info.value.code == "invalid_file_format"


def test_single_class_training_file(tmp_path):
    err = fails(tmp_path, [CLS, CLS])
    assert err.code == "invalid_label" and "at least 2 distinct labels" in str(err)
    # A validation file may hold one class.
    ex = load_examples(write(tmp_path, [CLS]), task=None, param="validation_file")
    assert ex.labels == ["pos"]


def test_validation_labels_must_be_known(tmp_path):
    train = load_examples(write(tmp_path, [CLS, CLS2], "t.jsonl"), task=None, param="training_file")
    valid = load_examples(
        write(tmp_path, [CLS, "", {"text": "meh", "label": "neutral"}], "v.jsonl"), task=None, param="validation_file"
    )
    with pytest.raises(DataError) as info:
        check_validation(train, valid)
    err = info.value
    assert (err.code, err.param, err.line) == ("invalid_label", "validation_file", 3)
    assert str(err) == "line 3: label 'neutral' does not occur in the training file"


def test_chat_weight_zero_is_kept_untrained(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "draft", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "final"},
        ]
    }
    ex = load_examples(write(tmp_path, [row]), task=None, param="training_file")
    assert ex.rows[0]["messages"][1] == {"role": "assistant", "content": "draft", "weight": 0}


# -- report -------------------------------------------------------------------------------------


def test_report_counts_classification(tmp_path, bert_tokenizer):
    rows = [{"text": "great film " * 10, "label": "pos"}] + [{"text": "awful", "label": "neg"}] * 6
    ex = load_examples(write(tmp_path, rows), task=None, param="training_file")
    report = data_report(ex, tokenizer=bert_tokenizer, max_seq_length=16)
    # "great film" x10 = 20 tokens + [CLS] [SEP]; "awful" = 1 + 2.
    assert report["examples"] == 7
    assert report["tokens"] == 22 + 6 * 3
    assert report["truncated_examples"] == 1
    assert report["max_example_tokens"] == 22
    assert report["label_counts"] == {"neg": 6, "pos": 1}
    assert any("only 7 examples" in w for w in report["warnings"])
    assert any("label 'pos' has only 1 examples" in w for w in report["warnings"])
    assert not any("'neg'" in w for w in report["warnings"])
    assert any("truncated" in w for w in report["warnings"])


def test_report_no_warnings_for_a_healthy_set(tmp_path, bert_tokenizer):
    rows = [{"text": f"text {i}", "label": "ab"[i % 2]} for i in range(30)]
    ex = load_examples(write(tmp_path, rows), task=None, param="training_file")
    report = data_report(ex, tokenizer=bert_tokenizer, max_seq_length=32)
    assert report["warnings"] == []
    assert report["label_counts"] == {"a": 15, "b": 15}
    assert report["truncated_examples"] == 0


def test_report_counts_chat_and_untrained(tmp_path, llama_tokenizer):
    long_user = "word " * 40
    rows = [
        CHAT,
        {"messages": [{"role": "user", "content": long_user}, {"role": "assistant", "content": "late"}]},
    ]
    ex = load_examples(write(tmp_path, rows), task=None, param="training_file")
    report = data_report(ex, tokenizer=llama_tokenizer, max_seq_length=20)
    lengths = [len(f["input_ids"]) for f in build_dataset(ex, tokenizer=llama_tokenizer, max_seq_length=10_000).features]
    assert report["tokens"] == sum(lengths)
    assert report["truncated_examples"] == 1
    assert report["untrained_examples"] == 1  # the long one loses its assistant turn at 20 tokens
    assert "label_counts" not in report
    assert any("will be skipped" in w for w in report["warnings"])
    # Training skips it too.
    ds = build_dataset(ex, tokenizer=llama_tokenizer, max_seq_length=20)
    assert len(ds) == 1 and ds.skipped == [1]
    assert any(x != IGNORE_INDEX for x in ds[0]["labels"])


def test_examples_dataclass_fields():
    ex = Examples(task="causal_lm", format="chat", rows=[])
    assert ex.labels == [] and len(ex) == 0
