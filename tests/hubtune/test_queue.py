"""Doorbells go out only after the transaction commits, through the real file-system transport."""

from __future__ import annotations

import json

import pytest

import hubtune.queue as queue
from hubtune.queue import PREPARE, make_celery, ring
from hubtune.settings import Settings


@pytest.fixture
def fs_celery(tmp_path, monkeypatch):
    settings = Settings(data_dir=tmp_path)
    app = make_celery(settings)
    monkeypatch.setattr(queue, "get_celery", lambda: app)
    return settings.queue_dir / "messages"


def _messages(folder) -> list[dict]:
    out = []
    for path in sorted(folder.iterdir()):
        body = json.loads(path.read_text())
        out.append(body["headers"])
    return out


def test_doorbell_sent_after_commit(sessions, fs_celery):
    with sessions.begin() as s:
        ring(s, PREPARE, "ftjob-1")
        assert _messages(fs_celery) == []  # nothing leaves before the commit
    headers = _messages(fs_celery)
    assert [(h["task"], h["argsrepr"]) for h in headers] == [(PREPARE, "['ftjob-1']")]


def test_no_doorbell_when_transaction_rolls_back(sessions, fs_celery):
    with pytest.raises(RuntimeError):
        with sessions.begin() as s:
            ring(s, PREPARE, "ftjob-2")
            raise RuntimeError("boom")
    with sessions.begin() as s:
        pass  # a later, unrelated commit must not send the dropped doorbell
    assert _messages(fs_celery) == []
