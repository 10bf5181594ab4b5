"""The worker's hub client, built from settings (the token never travels in task arguments)."""

from __future__ import annotations

from plugin import Hub, make_hub

from hubtune.settings import Settings


def hub_from_settings(settings: Settings) -> Hub:
    return make_hub(
        backend=settings.hub_backend,
        hub_dir=settings.resolved_hub_dir,
        endpoint=settings.hub_endpoint,
        token=settings.hub_token.get_secret_value() if settings.hub_token else None,
        cache_dir=settings.hub_cache_dir,
    )


def owner_hub(settings: Settings, owner: str) -> tuple[Hub, bool]:
    """(the hub as `owner` sees it, True when that is the server's own access). With their newest stored
    hub credential the hub decides what they may do; with the server's own access hubtune.namespaces does.

    The token is read from the database here, at run time, so it never travels in a task message.
    """
    from hubtune.db import session_scope
    from hubtune.namespaces import hub_token_for

    with session_scope() as session:
        token, servers = hub_token_for(session, settings, owner)
    return make_hub(backend=settings.hub_backend, hub_dir=settings.resolved_hub_dir, endpoint=settings.hub_endpoint,
                    token=token, cache_dir=settings.hub_cache_dir), servers


def hub_for_owner(settings: Settings, owner: str) -> Hub:
    """The hub as `owner` sees it: with their newest stored hub credential, else the server's token."""
    return owner_hub(settings, owner)[0]
