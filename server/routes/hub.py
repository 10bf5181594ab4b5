"""/v1/hub: hub credentials (stored encrypted, never returned), webhook triggers, and the receiver
for the hub's webhook deliveries."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Header, Request
from sqlalchemy import select

from hubtune import jobs
from hubtune.crypto import encrypt
from hubtune.destinations import DestinationRefused, check_url
from hubtune.ids import new_id
from hubtune.models import HubCredential, Trigger, now
from plugin.datasets import is_dataset_ref, parse_dataset_ref
from plugin.errors import InvalidRepoId
from plugin.repo_id import validate_repo_id
from plugin.webhooks import InvalidWebhook, parse_hub_webhook, secret_matches
from server import crud
from server.deps import CurrentKey, SessionDep, SettingsDep
from server.errors import ApiError, bad_request, not_found
from server.hub_schemas import (
    CredentialCreate, CredentialList, CredentialPublic, Deleted, TriggerCreate, TriggerList, TriggerPublic,
    WebhookAnswer,
)
from server.repo_ids import InvalidModelRef, check_model_ref
from server.triggers import handle_delivery

log = logging.getLogger(__name__)
router = APIRouter(prefix="/hub", tags=["hub"])


# --- credentials ------------------------------------------------------------------------------------


@router.post("/credentials", response_model=CredentialPublic)
def create_credential(session: SessionDep, key: CurrentKey, settings: SettingsDep, body: CredentialCreate):
    row = HubCredential(id=new_id("hubcred"), owner=key.owner, name=body.name,
                        token_encrypted=encrypt(settings, body.token.get_secret_value()), created_at=now())
    session.add(row)
    session.commit()
    return CredentialPublic.of(row)


@router.get("/credentials", response_model=CredentialList)
def list_credentials(session: SessionDep, key: CurrentKey):
    rows = session.execute(select(HubCredential).where(HubCredential.owner == key.owner)
                           .order_by(HubCredential.id.desc())).scalars()
    return CredentialList(data=[CredentialPublic.of(r) for r in rows])


@router.delete("/credentials/{credential_id}", response_model=Deleted)
def delete_credential(session: SessionDep, key: CurrentKey, credential_id: str):
    row = session.get(HubCredential, credential_id) if "\x00" not in credential_id else None
    if row is None or row.owner != key.owner:
        raise not_found("hub credential", credential_id)
    session.delete(row)
    session.commit()
    return Deleted(id=credential_id, object="hub.credential")


# --- triggers ---------------------------------------------------------------------------------------


@router.post("/triggers", response_model=TriggerPublic)
def create_trigger(session: SessionDep, key: CurrentKey, settings: SettingsDep, body: TriggerCreate):
    try:
        validate_repo_id(body.repo_id)
    except InvalidRepoId as exc:
        raise bad_request(str(exc), param="repo_id", code="invalid_repo_id") from None
    job = body.job
    watched = [f for f in ("training_file", "validation_file")
               if is_dataset_ref(getattr(job, f)) and _ref_repo(getattr(job, f), f"job.{f}") == body.repo_id]
    if not watched:
        raise bad_request(f"job.training_file or job.validation_file must be a file of the watched dataset, "
                          f"like hf://datasets/{body.repo_id}/train.jsonl", param="job.training_file",
                          code="invalid_trigger")
    try:
        check_model_ref(job.model)
    except InvalidModelRef as exc:
        raise bad_request(f"Invalid model '{job.model}': {exc}", param="job.model", code="invalid_model") from None
    if job.webhook_url is not None:
        try:
            check_url(job.webhook_url, settings, resolve=False)
        except DestinationRefused as exc:
            raise bad_request(str(exc), param="job.webhook_url", code="invalid_webhook_url") from None
    if job.priority > 0:  # the jobs start as the owner's, without an admin key to allow it
        raise ApiError(403, "A trigger's job cannot have a priority above 0.", param="job.priority",
                       code="forbidden")
    for field in ("training_file", "validation_file"):
        value = getattr(job, field)
        if value is not None and not is_dataset_ref(value):
            crud.check_file(session, key, value, f"job.{field}")
    jobs.check_hub_repo(session, key, job, param="job.hub.repo_id")  # checked again each time it fires
    row = Trigger(id=new_id("hubtrig"), owner=key.owner, key_id=key.id, repo_id=body.repo_id,
                  path_pattern=body.path_pattern,
                  template=job.model_dump(mode="json", exclude_unset=True), created_at=now())
    session.add(row)
    session.commit()
    return TriggerPublic.of(row)


def _ref_repo(ref: str, param: str) -> str:
    try:
        return parse_dataset_ref(ref).repo_id
    except InvalidRepoId as exc:
        raise bad_request(str(exc), param=param, code="invalid_dataset") from None


@router.get("/triggers", response_model=TriggerList)
def list_triggers(session: SessionDep, key: CurrentKey):
    rows = session.execute(select(Trigger).where(Trigger.owner == key.owner).order_by(Trigger.id.desc())).scalars()
    return TriggerList(data=[TriggerPublic.of(r) for r in rows])


@router.delete("/triggers/{trigger_id}", response_model=Deleted)
def delete_trigger(session: SessionDep, key: CurrentKey, trigger_id: str):
    row = session.get(Trigger, trigger_id) if "\x00" not in trigger_id else None
    if row is None or row.owner != key.owner:
        raise not_found("hub trigger", trigger_id)
    session.delete(row)
    session.commit()
    return Deleted(id=trigger_id, object="hub.trigger")


# --- the hub's webhook deliveries -------------------------------------------------------------------


@router.post("/webhooks", response_model=WebhookAnswer)
async def receive_webhook(request: Request, session: SessionDep, settings: SettingsDep,
                          x_webhook_secret: str | None = Header(default=None)):
    """No API key here: the hub authenticates with the shared secret in X-Webhook-Secret."""
    expected = settings.hub_webhook_secret.get_secret_value() if settings.hub_webhook_secret else None
    if expected is None or not secret_matches(x_webhook_secret, expected):
        raise ApiError(401, "Invalid or missing X-Webhook-Secret.", code="invalid_webhook_secret")
    try:
        event = parse_hub_webhook(json.loads(await request.body()))
    except (ValueError, InvalidWebhook) as exc:
        raise bad_request(f"Not a hub webhook delivery: {exc}", code="invalid_webhook") from None
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_handle, session, settings, event)


def _handle(session, settings, event) -> WebhookAnswer:
    answer = handle_delivery(session, settings, event)
    session.commit()  # doorbells for the new jobs go out here
    return answer
