"""Tokenizers kept warm in the worker process, for the read-only uses that run per job (prepare).

Loading a fast tokenizer costs tens of milliseconds (it parses tokenizer.json), which was most of a
prepare task's time and so of a job's submit -> running latency. A hub snapshot folder holds exactly
one commit, so (folder, commit) names the same files forever and the tokenizer can be kept. Training
loads its own copy (it may set a pad token and saves the tokenizer with the artifact), so nothing here
is ever modified.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from threading import Lock

MAX_CACHED = 8  # a worker sees a handful of base models; a tokenizer is a few MiB

_cache: OrderedDict[tuple[str, str], object] = OrderedDict()
_lock = Lock()


def cached_tokenizer(model_dir: Path, *, revision: str):
    """AutoTokenizer.from_pretrained(model_dir), loaded once per (folder, commit) in this process."""
    from transformers import AutoTokenizer

    key = (str(Path(model_dir).resolve()), revision)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with _lock:
        _cache[key] = tokenizer
        while len(_cache) > MAX_CACHED:
            _cache.popitem(last=False)
    return tokenizer
