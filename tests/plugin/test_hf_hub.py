"""The `hf` backend with the real huggingface_hub client against the hub-compatible test server."""

import json
import socket
import struct

import pytest
from huggingface_hub import HfApi, ModelCard

from plugin import (
    Hub,
    HubAuthError,
    HubError,
    HubUnavailable,
    InvalidRepoId,
    RepoNotFound,
    RevisionNotFound,
    render_model_card,
)
from plugin.hf import HFHub
from testkit.hubserver import HubServer

TOKEN = "hf_test_secret_token_123"


def safetensors_bytes(values: list[float]) -> bytes:
    """A valid .safetensors file holding one float32 tensor (built by hand: no torch needed)."""
    data = struct.pack(f"<{len(values)}f", *values)
    header = {"lora_A.weight": {"dtype": "F32", "shape": [len(values)], "data_offsets": [0, len(data)]}}
    header_bytes = json.dumps(header).encode()
    return struct.pack("<Q", len(header_bytes)) + header_bytes + data


def adapter_folder(path, *, r=8, weights=(0.5, -1.0, 2.0, 3.25)):
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_model.safetensors").write_bytes(safetensors_bytes(list(weights)))
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "base_model_name_or_path": "acme/base"}))
    (path / "README.md").write_text(
        render_model_card(
            repo_id="acme/tickets-lora", base_model="acme/base", base_model_revision=None,
            task="sequence_classification", tuning={"type": "lora", "r": r}, hyperparameters={},
            datasets=[], metrics={"accuracy": 0.9},
        )
    )
    return path


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def hub(hub_server, tmp_path):
    return HFHub(endpoint=hub_server.url, token=None, cache_dir=tmp_path / "cache")


def test_hf_hub_satisfies_the_protocol(hub):
    assert isinstance(hub, Hub) and hub.backend == "hf"


def test_publish_then_snapshot_by_repo_id_returns_the_same_bytes(hub, hub_server, tmp_path):
    folder = adapter_folder(tmp_path / "out")

    sha = hub.publish("acme/tickets-lora", folder=folder, message="Add adapter")

    assert len(sha) == 40
    assert hub_server.count("commit") == 1  # the whole folder went up as one commit
    assert hub.resolve("acme/tickets-lora") == sha
    assert hub.resolve("acme/tickets-lora", revision="main") == sha
    snap = hub.snapshot("acme/tickets-lora", revision=sha)
    got = files_of(snap)
    assert {k: v for k, v in got.items() if k != ".gitattributes"} == files_of(folder)
    assert snap.is_relative_to(tmp_path / "cache")
    assert hub.snapshot("acme/tickets-lora", revision="main") == snap
    # the repo was created private, and the card arrived intact
    info = HfApi(endpoint=hub_server.url).model_info("acme/tickets-lora")
    assert info.private is True and info.sha == sha
    assert ModelCard((snap / "README.md").read_text()).data.base_model == "acme/base"


def test_second_publish_keeps_files_and_pinned_revision_keeps_old_content(hub, tmp_path):
    first_folder = adapter_folder(tmp_path / "v1")
    first = hub.publish("acme/tickets-lora", folder=first_folder, message="v1")
    second_folder = tmp_path / "v2"
    second_folder.mkdir()
    (second_folder / "adapter_config.json").write_text('{"r": 16}')
    (second_folder / "eval.json").write_text('{"accuracy": 0.95}')

    second = hub.publish("acme/tickets-lora", folder=second_folder, message="v2")

    assert second != first
    assert hub.resolve("acme/tickets-lora") == second
    now = files_of(hub.snapshot("acme/tickets-lora", revision=second))
    assert now["adapter_config.json"] == b'{"r": 16}'
    assert now["eval.json"] == b'{"accuracy": 0.95}'
    assert now["adapter_model.safetensors"] == (first_folder / "adapter_model.safetensors").read_bytes()
    old = files_of(hub.snapshot("acme/tickets-lora", revision=first))
    assert old["adapter_config.json"] == (first_folder / "adapter_config.json").read_bytes()
    assert "eval.json" not in old


def test_republishing_the_same_folder_makes_no_new_commit(hub, hub_server, tmp_path):
    folder = adapter_folder(tmp_path / "out")
    sha = hub.publish("acme/tickets-lora", folder=folder, message="v1")
    assert hub.publish("acme/tickets-lora", folder=folder, message="again") == sha
    assert hub_server.count("commit") == 1


def test_publish_to_a_branch(hub, hub_server, tmp_path):
    main = hub.publish("acme/tickets-lora", folder=adapter_folder(tmp_path / "v1"), message="v1")
    dev = hub.publish("acme/tickets-lora", folder=adapter_folder(tmp_path / "v2", r=32), message="dev", branch="dev")

    assert dev != main
    assert hub.resolve("acme/tickets-lora", revision="dev") == dev
    assert hub.resolve("acme/tickets-lora") == main
    dev_config = json.loads((hub.snapshot("acme/tickets-lora", revision="dev") / "adapter_config.json").read_text())
    assert dev_config["r"] == 32
    assert set(hub_server.hub.branches("acme/tickets-lora")) == {"main", "dev"}
    # publishing to the existing branch again works (create_branch tolerates it)
    hub.publish("acme/tickets-lora", folder=adapter_folder(tmp_path / "v3", r=64), message="dev 2", branch="dev")
    assert hub.resolve("acme/tickets-lora", revision="dev") != dev


def test_dataset_repos(hub, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "hello", "label": 0}\n')
    sha = hub.publish("acme/tickets", folder=folder, message="data", repo_type="dataset")
    assert hub.resolve("acme/tickets", repo_type="dataset") == sha
    snap = hub.snapshot("acme/tickets", revision=sha, repo_type="dataset")
    assert (snap / "train.jsonl").read_text() == '{"text": "hello", "label": 0}\n'
    with pytest.raises(RepoNotFound):
        hub.resolve("acme/tickets")  # not a model repo


def test_missing_repo_and_revision(hub, tmp_path):
    with pytest.raises(RepoNotFound) as info:
        hub.resolve("acme/nope")
    assert "acme/nope" in str(info.value)
    with pytest.raises(RepoNotFound):
        hub.snapshot("acme/nope", revision="main")

    sha = hub.publish("acme/tickets-lora", folder=adapter_folder(tmp_path / "out"), message="v1")
    with pytest.raises(RevisionNotFound) as info:
        hub.resolve("acme/tickets-lora", revision="no-such-branch")
    assert "no-such-branch" in str(info.value) and "acme/tickets-lora" in str(info.value)
    with pytest.raises(RevisionNotFound):
        hub.snapshot("acme/tickets-lora", revision="no-such-branch")
    with pytest.raises(RevisionNotFound):
        hub.snapshot("acme/tickets-lora", revision="f" * 40)
    assert hub.resolve("acme/tickets-lora", revision=sha) == sha


def test_bad_repo_ids_never_reach_the_server(hub, hub_server, tmp_path):
    for bad in ("../etc", "acme/a--b", "a/b/c"):
        with pytest.raises(InvalidRepoId):
            hub.resolve(bad)
        with pytest.raises(InvalidRepoId):
            hub.publish(bad, folder=tmp_path, message="x")
    assert hub_server.calls == []


def test_wrong_token_raises_auth_error_without_leaking_it(hub_server, tmp_path):
    good = HFHub(endpoint=hub_server.url, token=TOKEN, cache_dir=tmp_path / "c1")
    sha = good.publish("acme/private", folder=adapter_folder(tmp_path / "out"), message="v1")
    hub_server.token = TOKEN
    wrong = "hf_wrong_token_456"
    bad = HFHub(endpoint=hub_server.url, token=wrong, cache_dir=tmp_path / "c2")

    for call in (
        lambda: bad.resolve("acme/private"),
        lambda: bad.snapshot("acme/private", revision=sha),
        lambda: bad.publish("acme/private", folder=tmp_path / "out", message="v2"),
    ):
        with pytest.raises(HubAuthError) as info:
            call()
        assert info.value.code == "hub_auth_error" and not info.value.retryable
        assert wrong not in str(info.value) and TOKEN not in str(info.value)
    assert wrong not in repr(bad)
    assert HFHub(endpoint=hub_server.url, token=TOKEN, cache_dir=tmp_path / "c3").resolve("acme/private") == sha


def test_forbidden_repo_raises_auth_error(hub, hub_server, tmp_path):
    hub_server.forbid("acme/theirs")
    with pytest.raises(HubAuthError):
        hub.publish("acme/theirs", folder=adapter_folder(tmp_path / "out"), message="v1")
    with pytest.raises(HubAuthError):
        hub.resolve("acme/theirs")


def test_server_error_on_commit_is_retryable_and_a_retry_succeeds(hub, hub_server, tmp_path):
    folder = adapter_folder(tmp_path / "out")
    hub_server.fail_next(1, status=500, endpoint="commit")

    with pytest.raises(HubUnavailable) as info:
        hub.publish("acme/tickets-lora", folder=folder, message="v1")
    assert info.value.retryable and "500" in str(info.value)
    assert not isinstance(info.value, (RepoNotFound, HubAuthError))

    sha = hub.publish("acme/tickets-lora", folder=folder, message="v1")
    assert hub.resolve("acme/tickets-lora") == sha
    assert hub_server.count("commit") == 2


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_on_resolve(hub, hub_server, status):
    hub_server.fail_next(1, status=status, endpoint="info")
    with pytest.raises(HubUnavailable):
        hub.resolve("acme/whatever")


def test_unreachable_hub_raises_unavailable(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub = HFHub(endpoint=f"http://127.0.0.1:{port}", token=None, cache_dir=tmp_path / "cache")
    with pytest.raises(HubUnavailable):
        hub.resolve("acme/tickets-lora")
    with pytest.raises(HubUnavailable):
        hub.snapshot("acme/tickets-lora", revision="main")
    with pytest.raises(HubUnavailable):
        hub.publish("acme/tickets-lora", folder=adapter_folder(tmp_path / "out"), message="v1")


def test_snapshot_of_a_commit_is_served_from_cache_when_the_hub_is_gone(tmp_path):
    with HubServer(tmp_path / "srv") as server:
        hub = HFHub(endpoint=server.url, token=None, cache_dir=tmp_path / "cache")
        folder = adapter_folder(tmp_path / "out")
        sha = hub.publish("acme/tickets-lora", folder=folder, message="v1")
        first = hub.snapshot("acme/tickets-lora", revision=sha)
    again = hub.snapshot("acme/tickets-lora", revision=sha)  # server stopped
    assert again == first
    assert (again / "adapter_model.safetensors").read_bytes() == (folder / "adapter_model.safetensors").read_bytes()


def test_url(hub, hub_server):
    assert hub.url("acme/x") == f"{hub_server.url}/acme/x"
    assert hub.url("acme/x", revision="dev") == f"{hub_server.url}/acme/x/tree/dev"
    assert hub.url("acme/x", repo_type="dataset") == f"{hub_server.url}/datasets/acme/x"


def test_all_errors_are_hub_errors(hub):
    with pytest.raises(HubError):
        hub.resolve("acme/nope")


def test_branch_names_with_a_slash(hub, tmp_path):
    # huggingface_hub sends the revision URL-encoded (exp%2Frun-1); the server must not split it.
    sha = hub.publish("acme/tickets-lora", folder=adapter_folder(tmp_path / "out"), message="v1", branch="exp/run-1")
    assert hub.resolve("acme/tickets-lora", revision="exp/run-1") == sha
    snap = hub.snapshot("acme/tickets-lora", revision="exp/run-1")
    assert (snap / "adapter_config.json").read_bytes() == (tmp_path / "out" / "adapter_config.json").read_bytes()


def test_test_server_speaks_the_rest_of_the_client_api(hub_server, tmp_path):
    """Other components may use plain HfApi calls against the test server; keep those working."""
    from huggingface_hub import hf_hub_download

    api = HfApi(endpoint=hub_server.url)
    folder = adapter_folder(tmp_path / "out")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.txt").write_text("deep")
    api.create_repo("acme/plain", private=False)
    info = api.upload_folder(repo_id="acme/plain", folder_path=folder, commit_message="upload")
    api.upload_file(repo_id="acme/plain", path_or_fileobj=b"tiny", path_in_repo="tiny.txt", commit_message="one file")

    assert set(api.list_repo_files("acme/plain")) == {
        ".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors", "sub/deep.txt", "tiny.txt"
    }
    assert [b.name for b in api.list_repo_refs("acme/plain").branches] == ["main"]
    [entry] = api.get_paths_info("acme/plain", ["sub/deep.txt"])
    assert entry.size == 4
    path = hf_hub_download("acme/plain", "sub/deep.txt", revision=info.oid, cache_dir=tmp_path / "c", endpoint=hub_server.url)
    assert open(path).read() == "deep"
    assert api.model_info("acme/plain").card_data.base_model == "acme/base"
    with pytest.raises(Exception, match="412|Precondition"):
        api.upload_file(repo_id="acme/plain", path_or_fileobj=b"x", path_in_repo="x.txt",
                        commit_message="stale", parent_commit=info.oid)


def test_works_with_xet_enabled_too(hub, monkeypatch, tmp_path):
    """Deployments have hf_xet installed and enabled; the server's "regular" upload mode keeps Xet out of it."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    folder = adapter_folder(tmp_path / "out")
    sha = hub.publish("acme/tickets-lora", folder=folder, message="v1")
    snap = hub.snapshot("acme/tickets-lora", revision=sha)
    assert (snap / "adapter_model.safetensors").read_bytes() == (folder / "adapter_model.safetensors").read_bytes()
