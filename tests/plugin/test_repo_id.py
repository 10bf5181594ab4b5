import pytest

from plugin import InvalidRepoId, split_model_ref, validate_repo_id
from plugin.errors import HubError


@pytest.mark.parametrize(
    "repo_id",
    ["gpt2", "acme/tickets-minilm-lora", "sentence-transformers/all-MiniLM-L6-v2", "a/b", "A_1/x.y_z", "n" * 96 + "/" + "m" * 96],
)
def test_valid_repo_ids_are_returned_unchanged(repo_id):
    assert validate_repo_id(repo_id) == repo_id


@pytest.mark.parametrize(
    "repo_id",
    [
        "", "/", "acme/", "/name", "a/b/c", "../../etc/passwd", "acme/..", "acme/a..b", "acme/a--b",
        "acme/-x", "acme/x-", "acme/.x", "acme/x.", "-acme/x", "acme./x", "acme/has space", "acme/ü",
        "acme/x?y", "acme\\x", "n" * 97, "acme/" + "m" * 97, "acme/x@main",
    ],
)
def test_invalid_repo_ids_raise(repo_id):
    with pytest.raises(InvalidRepoId) as info:
        validate_repo_id(repo_id)
    assert isinstance(info.value, HubError) and isinstance(info.value, ValueError)
    assert info.value.code == "invalid_repo_id"
    assert f"'{repo_id}'" in str(info.value)  # the message names the offending id


def test_non_string_repo_id_raises():
    with pytest.raises(InvalidRepoId):
        validate_repo_id(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("acme/model", ("acme/model", None)),
        ("acme/model@main", ("acme/model", "main")),
        ("gpt2@v1.0", ("gpt2", "v1.0")),
        ("acme/model@refs/pr/1", ("acme/model", "refs/pr/1")),
        ("acme/model@" + "a" * 40, ("acme/model", "a" * 40)),
    ],
)
def test_split_model_ref(ref, expected):
    assert split_model_ref(ref) == expected


@pytest.mark.parametrize("ref", ["acme/model@", "acme/model@ main", "acme/model@../x", "acme/mo del@main", "@main", "a/b/c@main"])
def test_split_model_ref_rejects_bad_refs(ref):
    with pytest.raises(InvalidRepoId):
        split_model_ref(ref)
