"""worker/hub.py: an owner's stored hub credential reaches the hub and never shows."""

from __future__ import annotations

import pytest

from hubtune.settings import get_settings
from plugin.errors import HubAuthError, HubError, RepoNotFound
from tests.server.apitest_helpers import auth
from tests.worker.hub_world import OWNER_TOKEN, owner_of, world  # noqa: F401  (world: a fixture)

def test_owner_credential_reaches_the_hub_and_never_shows(world):
    from worker.hub import hub_for_owner, hub_from_settings

    env, server = world
    server.hub.create_repo("acme/base")
    server.hub.commit("acme/base", files={"README.md": b"base"}, message="init", branch="main")
    key = env.key()
    with pytest.raises((HubAuthError, RepoNotFound)):
        hub_for_owner(get_settings(), owner_of(env, key)).resolve("acme/base")  # no credential, no server token
    r = env.client.post("/v1/hub/credentials", headers=auth(key), json={"token": OWNER_TOKEN})
    assert r.status_code == 200 and OWNER_TOKEN not in r.text
    hub = hub_for_owner(get_settings(), owner_of(env, key))
    assert len(hub.resolve("acme/base")) == 40 and OWNER_TOKEN not in repr(hub)
    with pytest.raises(HubError) as err:
        hub_from_settings(get_settings()).resolve("acme/base")
    assert OWNER_TOKEN not in str(err.value)
