"""The one way every component picks the hub token it acts with for an owner (hubtune.namespaces)."""

from __future__ import annotations

from hubtune.crypto import encrypt
from hubtune.ids import new_id
from hubtune.models import HubCredential
from hubtune.namespaces import hub_token_for, owner_hub_token
from hubtune.settings import Settings


def _store(sessions, settings, owner: str, token: str, created_at: float) -> None:
    with sessions.begin() as s:
        s.add(HubCredential(id=new_id("hubcred"), owner=owner, name=token, created_at=created_at,
                            token_encrypted=encrypt(settings, token)))


def test_two_tokens_stored_in_the_same_second_pick_the_later_one(sessions, tmp_path):
    settings = Settings(data_dir=tmp_path, hub_token="server-token")
    owner = new_id("owner")  # the database is shared by the module's tests
    with sessions() as s:
        assert owner_hub_token(s, settings, owner) is None
        assert hub_token_for(s, settings, owner) == ("server-token", True)
    same_second = 1_700_000_000.0
    _store(sessions, settings, owner, "older", same_second)
    _store(sessions, settings, owner, "newer", same_second)  # a later id, the same created_at
    _store(sessions, settings, new_id("other"), "someone-else", same_second + 5)
    with sessions() as s:
        assert owner_hub_token(s, settings, owner) == "newer"
        assert hub_token_for(s, settings, owner) == ("newer", False)


def test_without_any_token_the_hub_is_reached_anonymously(sessions, tmp_path):
    settings = Settings(data_dir=tmp_path, hub_token=None)
    with sessions() as s:
        assert hub_token_for(s, settings, new_id("owner")) == (None, True)
