"""`Idempotency-Key` on job creation: the same key and body give back the same job, another body under
the same key is a 409 the client must not retry.

The key row is written in the job's own transaction, so a job and its key exist together or not at all.
Two requests racing with the same key both try to insert the (owner, key) primary key; the loser's
commit fails, and it answers from the winner's row instead.

Note: the official openai Python client does not send an Idempotency-Key by itself (its base client
can, but the OpenAI client leaves the header unset), so a caller who wants retries to be safe passes one:
`extra_headers={"Idempotency-Key": ...}`; the client then sends the same header on each of its retries.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy.orm import Session

from hubtune.models import IdempotencyKey, Job
from hubtune.spec import JobRequest
from server.errors import ApiError, bad_request

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255  # the column's width


def check_key(raw: str | None) -> str | None:
    """The header's value, or None when it was not sent; a 400 naming the header when it is unusable."""
    if raw is None:
        return None
    key = raw.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise bad_request(
            f"Invalid {HEADER} header: expected 1 to {MAX_KEY_LENGTH} printable characters.",
            param=HEADER, code="invalid_idempotency_key",
        )
    return key


def request_hash(request: JobRequest) -> str:
    """sha256 of the request as validated (defaults filled in, keys sorted): the same request written
    differently (field order, spacing, an explicit default) hashes the same."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(session: Session, owner: str, key: str, digest: str) -> Job | None:
    """The job an earlier request with this key created (None: the key is new); 409 if its body differed."""
    row = session.get(IdempotencyKey, (owner, key))
    if row is None:
        return None
    if row.request_hash != digest:
        raise ApiError(
            409,
            f"This {HEADER} was already used with a different request body; send a new {HEADER} "
            "for a different request.",
            param=HEADER, code="idempotency_key_reused", headers={"x-should-retry": "false"},
        )
    job = session.get(Job, row.job_id)
    if job is None:  # cannot happen while jobs are never deleted; refuse rather than guess
        raise ApiError(409, f"The job created with this {HEADER} no longer exists.", param=HEADER,
                       code="idempotency_key_reused", headers={"x-should-retry": "false"})
    return job


def remember(session: Session, owner: str, key: str, digest: str, job_id: str) -> None:
    """Record the key with the new job, in the same transaction."""
    session.add(IdempotencyKey(owner=owner, key=key, request_hash=digest, job_id=job_id))
