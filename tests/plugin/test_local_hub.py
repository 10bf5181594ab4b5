import json
import multiprocessing
import os
import pathlib
import threading

import pytest

import plugin.local
from plugin import (
    Hub,
    HubConflict,
    InvalidRepoId,
    LocalHub,
    RepoNotFound,
    RevisionNotFound,
    make_hub,
)

WEIGHTS = bytes(range(256)) * 64 + b"\x00\xff" * 100


def write_folder(folder: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def read_folder(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def hub(tmp_path) -> LocalHub:
    return LocalHub(tmp_path / "hub")


@pytest.fixture
def v1(tmp_path) -> pathlib.Path:
    return write_folder(
        tmp_path / "v1",
        {"adapter_model.safetensors": WEIGHTS, "adapter_config.json": b'{"r": 8}', "tok/vocab.txt": b"a\nb\n"},
    )


def test_local_hub_satisfies_the_protocol(hub):
    assert isinstance(hub, Hub)
    assert hub.backend == "local"


def test_publish_resolve_snapshot_round_trip(hub, v1):
    sha = hub.publish("acme/tickets", folder=v1, message="first")

    assert len(sha) == 40 and all(c in "0123456789abcdef" for c in sha)
    assert hub.resolve("acme/tickets") == sha
    assert hub.resolve("acme/tickets", revision="main") == sha
    assert hub.resolve("acme/tickets", revision=sha) == sha
    assert hub.resolve("acme/tickets", revision=sha[:8]) == sha
    snap = hub.snapshot("acme/tickets", revision="main")
    assert read_folder(snap) == read_folder(v1)
    assert snap == hub.snapshot("acme/tickets", revision=sha)


def test_layout_on_disk(hub, v1):
    sha = hub.publish("acme/tickets", folder=v1, message="first")
    repo = hub.root / "models" / "acme" / "tickets"

    assert (repo / "refs" / "heads" / "main").read_text() == sha
    assert (repo / "objects" / sha / "adapter_model.safetensors").read_bytes() == WEIGHTS
    [entry] = [json.loads(line) for line in (repo / "commits.jsonl").read_text().splitlines()]
    assert entry["sha"] == sha and entry["parent"] is None and entry["message"] == "first"
    assert not [p for p in (repo / "objects").iterdir() if p.name.startswith(".tmp")]


def test_snapshot_files_are_read_only(hub, v1):
    hub.publish("acme/tickets", folder=v1, message="first")
    for path in hub.snapshot("acme/tickets", revision="main").rglob("*"):
        if path.is_file():
            assert not os.stat(path).st_mode & 0o222, path


def test_second_publish_keeps_old_files_and_old_revision_still_resolves(hub, v1, tmp_path):
    first = hub.publish("acme/tickets", folder=v1, message="first")
    v2 = write_folder(tmp_path / "v2", {"adapter_config.json": b'{"r": 16}', "README.md": b"# card\n"})

    second = hub.publish("acme/tickets", folder=v2, message="second")

    assert second != first
    assert hub.resolve("acme/tickets") == second
    now = read_folder(hub.snapshot("acme/tickets", revision="main"))
    assert now == {
        "adapter_model.safetensors": WEIGHTS,  # kept from the first commit
        "adapter_config.json": b'{"r": 16}',  # overwritten
        "README.md": b"# card\n",  # added
        "tok/vocab.txt": b"a\nb\n",
    }
    # the pinned old revision is immutable
    assert read_folder(hub.snapshot("acme/tickets", revision=first)) == read_folder(v1)
    log = hub.log("acme/tickets")
    assert [(c["sha"], c["parent"], c["message"]) for c in log] == [(first, None, "first"), (second, first, "second")]


def test_unchanged_files_share_storage_with_the_parent_commit(hub, v1, tmp_path):
    first = hub.publish("acme/tickets", folder=v1, message="first")
    second = hub.publish("acme/tickets", folder=write_folder(tmp_path / "v2", {"x.txt": b"x"}), message="2")
    old = hub.snapshot("acme/tickets", revision=first) / "adapter_model.safetensors"
    new = hub.snapshot("acme/tickets", revision=second) / "adapter_model.safetensors"
    assert os.stat(old).st_ino == os.stat(new).st_ino


def test_republishing_identical_files_makes_no_empty_commit(hub, v1):
    first = hub.publish("acme/tickets", folder=v1, message="first")
    assert hub.publish("acme/tickets", folder=v1, message="again") == first
    assert len(hub.log("acme/tickets")) == 1


def test_branches(hub, v1, tmp_path):
    main = hub.publish("acme/tickets", folder=v1, message="first")
    dev_folder = write_folder(tmp_path / "dev", {"adapter_config.json": b'{"r": 32}'})

    dev = hub.publish("acme/tickets", folder=dev_folder, message="on dev", branch="dev")

    assert dev != main
    assert hub.resolve("acme/tickets", revision="dev") == dev
    assert hub.resolve("acme/tickets") == main  # main did not move
    dev_files = read_folder(hub.snapshot("acme/tickets", revision="dev"))
    assert dev_files["adapter_config.json"] == b'{"r": 32}'
    assert dev_files["adapter_model.safetensors"] == WEIGHTS  # a new branch starts from main
    assert read_folder(hub.snapshot("acme/tickets", revision="main")) == read_folder(v1)
    assert hub.branches("acme/tickets") == {"main": main, "dev": dev}


def test_branch_with_slash_and_branch_of_new_repo(hub, v1):
    sha = hub.publish("acme/fresh", folder=v1, message="first", branch="exp/run-1")
    assert hub.resolve("acme/fresh", revision="exp/run-1") == sha
    with pytest.raises(RevisionNotFound):
        hub.resolve("acme/fresh")  # no main: the branch is an orphan


def test_create_branch(hub, v1, tmp_path):
    first = hub.publish("acme/tickets", folder=v1, message="first")
    hub.publish("acme/tickets", folder=write_folder(tmp_path / "v2", {"x": b"x"}), message="second")
    assert hub.create_branch("acme/tickets", branch="pinned", revision=first) == first
    assert hub.resolve("acme/tickets", revision="pinned") == first
    with pytest.raises(HubConflict):
        hub.create_branch("acme/tickets", branch="pinned")


def test_missing_repo_and_revision_errors(hub, v1):
    with pytest.raises(RepoNotFound) as info:
        hub.resolve("acme/nope")
    assert "acme/nope" in str(info.value) and info.value.code == "repo_not_found"
    with pytest.raises(RepoNotFound):
        hub.snapshot("acme/nope", revision="main")

    sha = hub.publish("acme/tickets", folder=v1, message="first")
    for revision in ("nope", "0" * 40, "deadbeef"):
        with pytest.raises(RevisionNotFound) as info:
            hub.snapshot("acme/tickets", revision=revision)
        assert revision in str(info.value) and "acme/tickets" in str(info.value)
    assert not info.value.retryable
    with pytest.raises(RevisionNotFound):
        hub.resolve("acme/tickets", revision=sha[:3])  # too short to be a sha prefix


@pytest.mark.parametrize("repo_id", ["../escape", "acme/../../x", "acme/a/b", "/abs", "acme/x y"])
def test_bad_repo_ids_are_rejected_before_touching_disk(hub, v1, repo_id):
    for call in (
        lambda: hub.resolve(repo_id),
        lambda: hub.snapshot(repo_id, revision="main"),
        lambda: hub.publish(repo_id, folder=v1, message="x"),
    ):
        with pytest.raises(InvalidRepoId):
            call()
    assert not hub.root.exists()


@pytest.mark.parametrize("revision", ["../../../etc", "main/../x", " main", "", "a b"])
def test_bad_revisions_are_rejected(hub, v1, revision):
    hub.publish("acme/tickets", folder=v1, message="first")
    with pytest.raises(InvalidRepoId):
        hub.snapshot("acme/tickets", revision=revision)
    with pytest.raises(InvalidRepoId):
        hub.publish("acme/tickets", folder=v1, message="x", branch=revision)


def test_datasets_live_apart_from_models(hub, v1, tmp_path):
    data = write_folder(tmp_path / "data", {"train.jsonl": b'{"text": "hi", "label": 1}\n'})
    dsha = hub.publish("acme/tickets", folder=data, message="data", repo_type="dataset")
    msha = hub.publish("acme/tickets", folder=v1, message="model")

    assert (hub.root / "datasets" / "acme" / "tickets" / "objects" / dsha).is_dir()
    assert read_folder(hub.snapshot("acme/tickets", revision="main", repo_type="dataset")) == read_folder(data)
    assert hub.resolve("acme/tickets") == msha
    with pytest.raises(RepoNotFound):
        hub.resolve("acme/other", repo_type="dataset")
    with pytest.raises(ValueError):
        hub.resolve("acme/tickets", repo_type="space")


def test_repo_id_without_namespace(hub, v1):
    sha = hub.publish("gpt2", folder=v1, message="first")
    assert hub.resolve("gpt2") == sha
    assert read_folder(hub.snapshot("gpt2", revision=sha)) == read_folder(v1)


def test_vcs_and_download_metadata_are_not_published(hub, v1):
    write_folder(v1, {".git/HEAD": b"ref", ".cache/huggingface/download/x.metadata": b"m", "sub/.git/config": b"c"})
    hub.publish("acme/tickets", folder=v1, message="first")
    files = read_folder(hub.snapshot("acme/tickets", revision="main"))
    assert set(files) == {"adapter_model.safetensors", "adapter_config.json", "tok/vocab.txt"}


def test_publishing_an_empty_or_missing_folder_fails(hub, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        hub.publish("acme/tickets", folder=tmp_path / "empty", message="x")
    with pytest.raises(ValueError, match="does not exist"):
        hub.publish("acme/tickets", folder=tmp_path / "missing", message="x")


def test_a_failed_publish_leaves_the_branch_and_objects_untouched(hub, v1, tmp_path, monkeypatch):
    first = hub.publish("acme/tickets", folder=v1, message="first")
    v2 = write_folder(tmp_path / "v2", {"a.bin": b"a", "b.bin": b"b"})
    real_write = plugin.local._write_file
    calls = []

    def crash_on_second_file(src, dest):
        calls.append(dest)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write(src, dest)

    monkeypatch.setattr(plugin.local, "_write_file", crash_on_second_file)
    with pytest.raises(OSError, match="disk full"):
        hub.publish("acme/tickets", folder=v2, message="second")

    repo = hub.root / "models" / "acme" / "tickets"
    assert hub.resolve("acme/tickets") == first
    assert sorted(p.name for p in (repo / "objects").iterdir()) == [first]  # no half snapshot, no temp dir
    assert len(hub.log("acme/tickets")) == 1
    monkeypatch.undo()
    assert hub.publish("acme/tickets", folder=v2, message="second") != first


def test_commit_with_expected_parent(hub, v1):
    first = hub.publish("acme/tickets", folder=v1, message="first")
    second = hub.commit("acme/tickets", files={"x": b"1"}, message="2", parent_commit=first)
    with pytest.raises(HubConflict) as info:
        hub.commit("acme/tickets", files={"x": b"2"}, message="3", parent_commit=first)
    assert info.value.retryable
    assert hub.resolve("acme/tickets") == second


def test_commit_deletions(hub, v1):
    hub.publish("acme/tickets", folder=v1, message="first")
    hub.commit("acme/tickets", files={}, deletions=["tok", "adapter_config.json"], message="rm")
    assert set(read_folder(hub.snapshot("acme/tickets", revision="main"))) == {"adapter_model.safetensors"}


def test_concurrent_publishers_in_threads_never_lose_a_commit(hub, tmp_path):
    folders = [write_folder(tmp_path / f"f{i}", {f"file{i}.txt": f"{i}".encode()}) for i in range(8)]
    errors = []

    def publish(folder):
        try:
            hub.publish("acme/busy", folder=folder, message=folder.name)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=publish, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    _assert_linear_history(hub, "acme/busy", 8)


def _publish_in_process(root: str, index: int, folder: str) -> str:
    return LocalHub(pathlib.Path(root)).publish("acme/busy", folder=pathlib.Path(folder), message=f"p{index}")


def test_concurrent_publishers_in_processes_never_lose_a_commit(hub, tmp_path):
    folders = [write_folder(tmp_path / f"f{i}", {f"file{i}.txt": f"{i}".encode()}) for i in range(6)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(6) as pool:
        shas = pool.starmap(_publish_in_process, [(str(hub.root), i, str(f)) for i, f in enumerate(folders)])
    assert len(set(shas)) == 6
    _assert_linear_history(hub, "acme/busy", 6)


def _assert_linear_history(hub: LocalHub, repo_id: str, n: int) -> None:
    files = read_folder(hub.snapshot(repo_id, revision="main"))
    assert set(files) == {f"file{i}.txt" for i in range(n)}  # every publisher's file survived
    log = hub.log(repo_id)
    assert len(log) == n
    assert [c["parent"] for c in log] == [None] + [c["sha"] for c in log[:-1]]
    assert log[-1]["sha"] == hub.resolve(repo_id)


def test_url_is_a_file_uri(hub, v1):
    sha = hub.publish("acme/tickets", folder=v1, message="first")
    assert hub.url("acme/tickets").startswith("file://")
    assert hub.url("acme/tickets").endswith("/models/acme/tickets")
    assert hub.url("acme/tickets", revision="main").endswith(f"/objects/{sha}")
    assert hub.url("acme/not-yet").endswith("/models/acme/not-yet")  # a link for a repo still to come


def test_make_hub(tmp_path):
    local = make_hub(backend="local", hub_dir=tmp_path / "h", cache_dir=tmp_path / "c")
    assert isinstance(local, LocalHub) and local.root == tmp_path / "h"
    hf = make_hub(backend="hf", hub_dir=tmp_path / "h", endpoint="http://127.0.0.1:1", token="t", cache_dir=tmp_path / "c")
    assert hf.backend == "hf" and isinstance(hf, Hub)
    assert hf.url("acme/x") == "http://127.0.0.1:1/acme/x"
    with pytest.raises(ValueError, match="'s3'"):
        make_hub(backend="s3", hub_dir=tmp_path, cache_dir=tmp_path)
