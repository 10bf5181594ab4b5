"""Hub.read_file: one file of a repo (a model's config.json) without fetching the weights, on both backends."""

from __future__ import annotations

import json

import pytest

from plugin import Hub, RepoNotFound, RevisionNotFound
from plugin.base import EntryNotFound
from plugin.hf import HFHub
from plugin.local import LocalHub

REPO = "acme/tiny"


def model_folder(path, *, hidden: int):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": hidden}))
    (path / "model.safetensors").write_bytes(b"\0" * 4096)
    return path


@pytest.fixture(params=["local", "hf"])
def hubs(request, tmp_path) -> tuple[Hub, LocalHub, object]:
    """(hub under test, the LocalHub holding its repos, the hf cache dir or None)."""
    if request.param == "local":
        local = LocalHub(tmp_path / "hub")
        return local, local, None
    server = request.getfixturevalue("hub_server")
    return HFHub(endpoint=server.url, token=None, cache_dir=tmp_path / "cache"), server.hub, tmp_path / "cache"


def test_read_file_returns_one_file_at_a_revision_without_the_weights(hubs, tmp_path):
    hub, store, cache = hubs
    first = store.publish(REPO, folder=model_folder(tmp_path / "v1", hidden=32), message="v1")
    store.publish(REPO, folder=model_folder(tmp_path / "v2", hidden=64), message="v2")

    assert json.loads(hub.read_file(REPO, path="config.json"))["hidden_size"] == 64
    assert json.loads(hub.read_file(REPO, path="config.json", revision="main"))["hidden_size"] == 64
    assert json.loads(hub.read_file(REPO, path="config.json", revision=first))["hidden_size"] == 32
    if cache is not None:
        fetched = {p.name for p in cache.rglob("*") if p.is_file()}
        assert "model.safetensors" not in fetched


def test_read_file_errors_say_what_is_missing(hubs, tmp_path):
    hub, store, _ = hubs
    store.publish(REPO, folder=model_folder(tmp_path / "v1", hidden=32), message="v1")
    with pytest.raises(EntryNotFound, match="tokenizer.json") as err:
        hub.read_file(REPO, path="tokenizer.json")
    assert err.value.code == "entry_not_found"
    with pytest.raises(RepoNotFound):
        hub.read_file("acme/nothing-here", path="config.json")
    with pytest.raises(RevisionNotFound):
        hub.read_file(REPO, path="config.json", revision="no-such-branch")
