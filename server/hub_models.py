"""A request's base model on the hub, as the key's owner sees it.

One resolution for the estimate endpoint and for job creation, so that both answer a model the hub
does not have alike (400 `model_not_found` on `model`). Job creation asks only when the hub answers
within `settings.model_check_seconds`; a slow or unreachable hub leaves the decision to prepare.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from sqlalchemy.orm import Session

from hubtune.models import ApiKey
from hubtune.namespaces import Rights, hub_token_for, may_see
from hubtune.settings import Settings
from plugin import Hub, VisibleOnly, make_hub
from plugin.base import EntryNotFound
from plugin.errors import HubError, HubUnavailable, RepoNotFound, RevisionNotFound
from server.errors import ApiError, bad_request
from server.repo_ids import InvalidModelRef, check_model_ref

log = logging.getLogger(__name__)

MODEL_NOT_FOUND = "model_not_found"
# Hub look-ups at job creation run here so that a hub that does not answer cannot hold a request past
# its deadline; a look-up still waiting on the hub keeps its thread, and with every thread waiting new
# checks simply time out (the jobs are created and prepare decides).
_CHECKS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hubtune-model-check")


def hub_for_key(session: Session, settings: Settings, key: ApiKey) -> Hub:
    """The hub as the key's owner sees it, as the worker builds it (worker/hub.py, which the server may not
    import): their newest stored credential, else the server's token showing only what the key may see
    (another owner's private repo answers exactly as a missing one: hubtune.namespaces)."""
    token, servers = hub_token_for(session, settings, key.owner)
    hub = make_hub(backend=settings.hub_backend, hub_dir=settings.resolved_hub_dir, endpoint=settings.hub_endpoint,
                   token=token, cache_dir=settings.hub_cache_dir)
    if not servers:
        return hub  # the owner's own token: the hub decides what they see
    rights = Rights.of(key)
    return VisibleOnly(hub, may_see=lambda repo_id, private: may_see(rights, repo_id, private=private))


def split_model(ref: str) -> tuple[str, str | None]:
    """(repo_id, revision) of a model reference; 400 `invalid_model` naming `model` when malformed."""
    try:
        return check_model_ref(ref)
    except InvalidModelRef as exc:
        raise bad_request(f"Invalid model '{ref}': {exc}", param="model", code="invalid_model") from None


def resolve_model(hub: Hub, ref: str) -> str:
    """The commit `ref` (org/name[@revision]) names on `hub`; 400 `model_not_found` when the hub has no
    such model or revision, 503 when it cannot be reached, 400 for any other refusal."""
    repo_id, revision = split_model(ref)
    try:
        return hub.resolve(repo_id, revision=revision)
    except (RepoNotFound, RevisionNotFound) as exc:
        raise bad_request(f"Model '{ref}' was not found on the hub: {exc}", param="model",
                          code=MODEL_NOT_FOUND) from None
    except HubUnavailable as exc:
        raise ApiError(503, f"The hub could not be reached: {exc}", code=exc.code, type="server_error") from None
    except HubError as exc:
        raise bad_request(f"Model '{ref}': {exc}", param="model", code=exc.code) from None


def model_config(hub: Hub, ref: str) -> tuple[str, dict[str, Any]]:
    """(commit, config.json) of the model `ref` names; the errors of resolve_model, and a 400 naming
    `model` when it has no config.json or one that is not a JSON object."""
    sha = resolve_model(hub, ref)
    repo_id, _ = split_model(ref)
    try:
        raw = hub.read_file(repo_id, path="config.json", revision=sha)
    except EntryNotFound:
        raise bad_request(f"Model '{ref}' has no config.json to estimate from.", param="model",
                          code="model_config_not_found") from None
    except HubUnavailable as exc:
        raise ApiError(503, f"The hub could not be reached: {exc}", code=exc.code, type="server_error") from None
    except HubError as exc:
        raise bad_request(f"Model '{ref}': {exc}", param="model", code=exc.code) from None
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"Model '{ref}' has a config.json that is not JSON: {exc}", param="model",
                          code="invalid_model_config") from None
    if not isinstance(config, dict):
        raise bad_request(f"Model '{ref}' has a config.json that is not a JSON object.", param="model",
                          code="invalid_model_config")
    return sha, config


def check_model_exists(session: Session, settings: Settings, key: ApiKey, ref: str) -> None:
    """At job creation: 400 `model_not_found` when the hub says, within `settings.model_check_seconds`,
    that it has no such model. A hub that is slow, unreachable or refuses otherwise decides nothing
    here: the job is created and prepare resolves the model (and fails the job if it must)."""
    if settings.model_check_seconds <= 0:
        return
    hub = hub_for_key(session, settings, key)  # the session stays on this thread
    check = _CHECKS.submit(resolve_model, hub, ref)
    try:
        check.result(timeout=settings.model_check_seconds)
    except ApiError as exc:
        if exc.code == MODEL_NOT_FOUND:
            raise
        log.info("model %s not checked at create (%s); prepare decides", ref, exc.message)
    except FutureTimeout:
        log.info("model %s not checked at create: no answer from the hub in %ss; prepare decides", ref,
                 settings.model_check_seconds)
    except Exception as exc:  # noqa: BLE001 - the hub's trouble is never the request's
        log.info("model %s not checked at create (%s); prepare decides", ref, exc)
