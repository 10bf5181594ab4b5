"""CSV for classification, and the data report's warnings."""

from __future__ import annotations

import pytest

from worker.engine.data import DataError, load_examples
from worker.engine.data_report import data_report


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_header_text_and_label(tmp_path):
    path = write(tmp_path, 'id,text,label\n1,great film,pos\n\n2,"awful, long\nfilm",neg\n3,"said ""ok""",pos\n')
    ex = load_examples(path, task=None, param="training_file")
    assert (ex.task, ex.format, ex.labels) == ("sequence_classification", "classification", ["neg", "pos"])
    assert ex.rows == [{"text": "great film", "label": "pos"}, {"text": "awful, long\nfilm", "label": "neg"},
                       {"text": 'said "ok"', "label": "pos"}]
    assert ex.lines == [2, 4, 6]  # the quoted field spans lines 4-5


@pytest.mark.parametrize(
    "text, code, line, words",
    [
        ("text,category\nhi,a\n", "missing_column", 1, "label"),
        ("text,label\nhi,a\nbye\n", "invalid_file_format", 3, "expected 2 fields"),
        ("text,label\nhi,a\n ,b\n", "invalid_text", 3, "text must not be empty"),
        ("text,label\nhi,a\nyo,\n", "invalid_label", 3, "label must not be empty"),
        ("text,label\n", "empty_file", None, "no examples"),
    ],
)
def test_csv_errors_name_the_line(tmp_path, text, code, line, words):
    with pytest.raises(DataError) as info:
        load_examples(write(tmp_path, text), task=None, param="training_file")
    assert (info.value.code, info.value.line, info.value.param) == (code, line, "training_file")
    assert words in str(info.value)
    if line is not None:
        assert str(info.value).startswith(f"line {line}:")


def test_csv_is_for_classification_only(tmp_path):
    with pytest.raises(DataError) as info:
        load_examples(write(tmp_path, "text,label\nhi,a\nho,b\n"), task="causal_lm", param="training_file")
    assert info.value.code == "invalid_task" and info.value.param == "task"


def test_report_warns_about_small_data_and_rare_classes(tmp_path, bert_tokenizer):
    rows = "".join(f"good day {i},common\n" for i in range(12)) + "bad day,rare\nbad night,rare\n"
    ex = load_examples(write(tmp_path, "text,label\n" + rows), task=None, param="training_file")
    report = data_report(ex, tokenizer=bert_tokenizer, max_seq_length=64)
    assert report["label_counts"] == {"common": 12, "rare": 2}
    assert report["examples"] == 14 and report["tokens"] > 14
    assert any("only 14 examples" in w for w in report["warnings"])
    assert any("label 'rare' has only 2 examples" in w for w in report["warnings"])
    assert not any("'common'" in w for w in report["warnings"])
