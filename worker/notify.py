"""Completion notifications: when a job succeeds, fails or is cancelled, POST an event to the job's
webhook_url, signed the way OpenAI signs its webhooks (Standard Webhooks):

    webhook-id: <event id, the same on every retry>    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}" with the whsec_ secret>

so that `openai.OpenAI(webhook_secret=...).webhooks.unwrap(body, headers)` accepts it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time

import httpx

from hubtune.crypto import secret_file
from hubtune.db import session_scope
from hubtune.destinations import DestinationRefused, check_url
from hubtune.lifecycle import TERMINAL, Status
from hubtune.models import Job, Notification, now
from hubtune.settings import Settings

log = logging.getLogger(__name__)
SECRET_FILE = "webhook.secret"


def webhook_secret(settings: Settings) -> str:
    """The whsec_ signing secret: the setting, else one generated once into the data dir (mode 0600)."""
    if settings.webhook_secret is not None:
        return settings.webhook_secret.get_secret_value()
    return secret_file(settings.data_dir.resolve() / SECRET_FILE,
                       lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())


def sign(secret: str, *, webhook_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def run_notify(job_id: str, settings: Settings) -> None:
    prepared = _prepare(job_id)
    if prepared is None:
        return
    event_id, url, body = prepared
    for attempt in range(1, settings.webhook_attempts + 1):
        outcome, detail = _deliver(settings, url, event_id, body)
        _record(event_id, attempt, outcome, detail)
        if outcome in ("delivered", "failed"):
            return
        if attempt < settings.webhook_attempts:
            time.sleep(settings.webhook_retry_base_seconds * 2 ** (attempt - 1))
    _record(event_id, settings.webhook_attempts, "failed", detail)


def _prepare(job_id: str) -> tuple[str, str, str] | None:
    """(event id, url, body) of the job's current terminal state, or None when there is nothing to send.

    The event id is derived from the job and the moment it finished, so a doorbell rung twice for the
    same ending sends one event, and a later ending (a retried publish) sends a new one.
    """
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or not job.webhook_url or Status(job.status) not in TERMINAL:
            return None
        finished = job.finished_at or now()
        kind = f"fine_tuning.job.{job.status}"
        event_id = "evt_" + hashlib.sha256(f"{job.id}|{job.status}|{finished!r}".encode()).hexdigest()[:32]
        row = session.get(Notification, event_id)
        if row is not None and row.status != "pending":
            return None
        body = json.dumps({"id": event_id, "object": "event", "created_at": int(finished), "type": kind,
                           "data": {"id": job.id}}, separators=(",", ":"))
        if row is None:
            session.add(Notification(id=event_id, job_id=job.id, type=kind, url=job.webhook_url, status="pending",
                                     attempts=0, created_at=now()))
        return event_id, job.webhook_url, body


def _deliver(settings: Settings, url: str, event_id: str, body: str) -> tuple[str, str | None]:
    """("delivered" | "retry" | "failed", why)."""
    try:
        check_url(url, settings, resolve=True)
    except DestinationRefused as exc:
        return "failed", str(exc)
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json", "user-agent": "hubtune-webhooks",
        "webhook-id": event_id, "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(webhook_secret(settings), webhook_id=event_id, timestamp=timestamp, body=body),
    }
    try:
        # No redirects: a redirect could lead to an address the allow-list would refuse.
        response = httpx.post(url, content=body.encode(), headers=headers, timeout=settings.webhook_timeout_seconds,
                              follow_redirects=False)
    except httpx.HTTPError as exc:
        return "retry", f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return "delivered", None
    why = f"HTTP {response.status_code}"
    if response.status_code in (408, 409, 425, 429) or response.status_code >= 500:
        return "retry", why
    return "failed", why


def _record(event_id: str, attempt: int, outcome: str, detail: str | None) -> None:
    with session_scope() as session:
        row = session.get(Notification, event_id)
        if row is None:
            return
        row.attempts = attempt
        row.last_error = detail
        if outcome == "delivered":
            row.status, row.delivered_at = "delivered", now()
        elif outcome == "failed":
            row.status = "failed"
    if outcome != "delivered":
        log.warning("notification %s attempt %d: %s", event_id, attempt, detail)

