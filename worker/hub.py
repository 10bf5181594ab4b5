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


def hub_for_owner(settings: Settings, owner: str) -> Hub:
    """The hub as `owner` sees it: with their newest stored hub credential, else the server's token.

    The token is read from the database here, at run time, so it never travels in a task message.
    """
    from sqlalchemy import select

    from hubtune.crypto import decrypt
    from hubtune.db import session_scope
    from hubtune.models import HubCredential

    with session_scope() as session:
        stored = session.execute(
            select(HubCredential.token_encrypted).where(HubCredential.owner == owner)
            .order_by(HubCredential.created_at.desc(), HubCredential.id.desc()).limit(1)
        ).scalar_one_or_none()
    if stored is None:
        return hub_from_settings(settings)
    return make_hub(backend=settings.hub_backend, hub_dir=settings.resolved_hub_dir, endpoint=settings.hub_endpoint,
                    token=decrypt(settings, stored), cache_dir=settings.hub_cache_dir)
