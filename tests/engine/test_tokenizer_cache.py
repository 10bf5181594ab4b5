"""The worker keeps tokenizers warm per (snapshot folder, commit) for prepare."""

from __future__ import annotations

import transformers

from testkit.tiny_models import make_tiny_bert
from worker.engine import tokenizers


def test_loaded_once_per_folder_and_commit(tmp_path, monkeypatch):
    folder = make_tiny_bert(tmp_path / "bert")
    loads = []
    real = transformers.AutoTokenizer.from_pretrained

    def counting(path, *args, **kwargs):
        loads.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", counting)
    monkeypatch.setattr(tokenizers, "_cache", type(tokenizers._cache)())
    first = tokenizers.cached_tokenizer(folder, revision="a" * 40)
    assert tokenizers.cached_tokenizer(folder, revision="a" * 40) is first and len(loads) == 1
    other = tokenizers.cached_tokenizer(folder, revision="b" * 40)  # another commit is another tokenizer
    assert other is not first and len(loads) == 2
    assert first("great service")["input_ids"] == other("great service")["input_ids"]
    monkeypatch.setattr(tokenizers, "MAX_CACHED", 1)
    tokenizers.cached_tokenizer(folder, revision="c" * 40)
    assert len(tokenizers._cache) == 1  # bounded: the oldest is dropped
    tokenizers.cached_tokenizer(folder, revision="a" * 40)
    assert len(loads) == 4
