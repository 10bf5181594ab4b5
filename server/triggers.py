"""Hub webhook deliveries -> jobs: match triggers, pin their dataset files to the pushed commit, and
start each (trigger, commit) at most once."""

from __future__ import annotations

import fnmatch
import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hubtune.errors import JobError
from hubtune.jobs import check_hub_repo
from hubtune.models import ApiKey, HubDelivery, Trigger, now
from hubtune.namespaces import hub_token_for
from hubtune.settings import Settings
from hubtune.spec import JobRequest
from plugin.datasets import is_dataset_ref, parse_dataset_ref
from plugin.webhooks import HubWebhook
from server import crud
from server.errors import ApiError
from server.hub_schemas import WebhookAnswer

log = logging.getLogger(__name__)
FILE_FIELDS = ("training_file", "validation_file")


def watched_branch(template: dict, repo_id: str) -> str:
    """The branch a trigger follows: the revision its dataset refs name, else main."""
    for field in FILE_FIELDS:
        ref = template.get(field)
        if is_dataset_ref(ref):
            target = parse_dataset_ref(ref)
            if target.repo_id == repo_id and target.revision:
                return target.revision
    return "main"


def pinned_template(template: dict, repo_id: str, commit: str) -> dict:
    """The template with every hub dataset file of `repo_id` pinned to `commit`."""
    body = dict(template)
    for field in FILE_FIELDS:
        ref = body.get(field)
        if is_dataset_ref(ref) and parse_dataset_ref(ref).repo_id == repo_id:
            body[field] = str(parse_dataset_ref(ref).pinned(commit))
    return body


def handle_delivery(session: Session, settings: Settings, event: HubWebhook) -> WebhookAnswer:
    if event.repo_type != "dataset" or not event.is_content_change:
        return WebhookAnswer(ignored=f"not a content change of a dataset repo ({event.scope} {event.action})")
    triggers = session.execute(select(Trigger).where(Trigger.repo_id == event.repo_name)
                               .order_by(Trigger.id)).scalars().all()
    answer = WebhookAnswer()
    for trigger in triggers:
        why = _start(session, settings, trigger, event, answer)
        if why:
            answer.skipped[trigger.id] = why
    return answer


def _start(session: Session, settings: Settings, trigger: Trigger, event: HubWebhook, answer: WebhookAnswer) -> str | None:
    branch = watched_branch(trigger.template, trigger.repo_id)
    update = event.update_for(branch)
    if event.updated_refs and update is None:
        return f"branch '{branch}' did not change"
    head = (update.new_sha if update else None) or (event.head_sha if branch == "main" else None)
    if head is None:
        return f"the delivery names no new commit of branch '{branch}'"
    key = _trigger_key(session, trigger)
    if key.revoked_at is not None:
        return "the API key that created this trigger has been revoked"
    request = JobRequest.model_validate(pinned_template(trigger.template, trigger.repo_id, head))
    try:  # the key's grants may have changed since the trigger was created
        check_hub_repo(session, key, request, param="job.hub.repo_id")
    except JobError as exc:
        return exc.message
    if trigger.path_pattern and update and update.old_sha:
        changed = _changed_paths(session, settings, trigger, update.old_sha, head)
        if not any(fnmatch.fnmatchcase(path, trigger.path_pattern) for path in changed):
            return f"no changed file matches '{trigger.path_pattern}'"
    try:
        with session.begin_nested():  # the unique (trigger, commit) row is the "already handled" check
            delivery = HubDelivery(trigger_id=trigger.id, head_sha=head, created_at=now())
            session.add(delivery)
    except IntegrityError:
        return f"commit {head} was already handled"
    job = crud.create_job(session, key, request, settings)
    delivery.job_id = job.id
    answer.jobs.append(job.id)
    return None


def _changed_paths(session: Session, settings: Settings, trigger: Trigger, old: str, new: str) -> set[str]:
    from plugin import make_hub
    from plugin.errors import HubError

    hub = make_hub(backend=settings.hub_backend, hub_dir=settings.resolved_hub_dir, endpoint=settings.hub_endpoint,
                   token=hub_token_for(session, settings, trigger.owner)[0], cache_dir=settings.hub_cache_dir)
    try:
        before = hub.files(trigger.repo_id, revision=old, repo_type="dataset")
        after = hub.files(trigger.repo_id, revision=new, repo_type="dataset")
    except HubError as exc:
        # 502: the hub retries the delivery later, and nothing was recorded as handled.
        raise ApiError(502, f"could not compare the commits of '{trigger.repo_id}' on the hub: {exc.code}",
                       code="hub_unavailable") from None
    return {p for p in set(before) | set(after) if before.get(p) != after.get(p)}


def _trigger_key(session: Session, trigger: Trigger) -> ApiKey:
    """The key that created the trigger (its jobs are that key's, checked against its current grants);
    a trigger from before keys were recorded acts as its owner with no grants (not stored)."""
    key = session.get(ApiKey, trigger.key_id) if trigger.key_id else None
    if key is None and trigger.key_id:  # deleted since: as good as revoked
        return ApiKey(owner=trigger.owner, is_admin=False, namespaces=[], revoked_at=now())
    return key or ApiKey(owner=trigger.owner, is_admin=False, namespaces=[])
