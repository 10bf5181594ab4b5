"""Hub webhook deliveries, parsed from what the hub actually sends.

The Hugging Face Hub posts JSON like
    {"event": {"action": "update", "scope": "repo.content"},
     "repo": {"type": "dataset", "name": "org/data", "headSha": "<40 hex>", ...},
     "updatedRefs": [{"ref": "refs/heads/main", "oldSha": "...", "newSha": "..."}], ...}
with the shared secret in the `X-Webhook-Secret` header. huggingface_hub's own payload model reads
`repo.head_sha`, which the hub never sends, so this module reads the camelCase fields itself.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from typing import Any

_SHA = re.compile(r"[0-9a-f]{40}")


class InvalidWebhook(ValueError):
    """The body is not a hub webhook delivery this module understands."""


@dataclass(frozen=True)
class RefUpdate:
    ref: str
    old_sha: str | None
    new_sha: str | None

    @property
    def branch(self) -> str | None:
        return self.ref[len("refs/heads/"):] if self.ref.startswith("refs/heads/") else None


@dataclass(frozen=True)
class HubWebhook:
    action: str
    scope: str
    repo_type: str
    repo_name: str
    head_sha: str | None
    updated_refs: list[RefUpdate] = field(default_factory=list)

    @property
    def is_content_change(self) -> bool:
        """A push to the repo's files (not a discussion, a settings change or a deletion)."""
        return self.scope.startswith("repo.content") and self.action in ("create", "update")

    def update_for(self, branch: str) -> RefUpdate | None:
        return next((u for u in self.updated_refs if u.branch == branch), None)


def secret_matches(received: str | None, expected: str) -> bool:
    """Constant-time comparison, so the response time tells an attacker nothing about the secret."""
    return received is not None and hmac.compare_digest(received.encode(), expected.encode())


def parse_hub_webhook(payload: Any) -> HubWebhook:
    if not isinstance(payload, dict):
        raise InvalidWebhook("the webhook body must be a JSON object")
    event, repo = payload.get("event"), payload.get("repo")
    if not isinstance(event, dict) or not isinstance(repo, dict):
        raise InvalidWebhook("the webhook body needs 'event' and 'repo' objects")
    action, scope = event.get("action"), event.get("scope")
    repo_type, name = repo.get("type"), repo.get("name")
    for key, value in (("event.action", action), ("event.scope", scope), ("repo.type", repo_type), ("repo.name", name)):
        if not isinstance(value, str) or not value:
            raise InvalidWebhook(f"the webhook body has no '{key}'")
    head = repo.get("headSha")
    if head is not None and not (isinstance(head, str) and _SHA.fullmatch(head)):
        raise InvalidWebhook("repo.headSha is not a 40-character commit sha")
    return HubWebhook(action=action, scope=scope, repo_type=repo_type, repo_name=name, head_sha=head,
                      updated_refs=_ref_updates(payload.get("updatedRefs")))


def _ref_updates(raw: Any) -> list[RefUpdate]:
    if not isinstance(raw, list):
        return []
    updates = []
    for item in raw:
        if isinstance(item, dict) and isinstance(item.get("ref"), str):
            updates.append(RefUpdate(item["ref"], _sha(item.get("oldSha")), _sha(item.get("newSha"))))
    return updates


def _sha(value: Any) -> str | None:
    return value if isinstance(value, str) and _SHA.fullmatch(value) else None
