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
