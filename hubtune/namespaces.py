"""Who may write where on the hub, and who may see which private repos.

Through the server's own hub access (the local hub folder, or the server-wide HUBTUNE_HUB_TOKEN) every
key would reach every repo that access reaches, so hubtune decides: a key writes only to its owner's
namespace and the namespaces an admin granted it; an admin key writes anywhere. Private repos outside
those namespaces look exactly like missing ones. With the owner's own hub credential
(/v1/hub/credentials) the hub itself decides, and none of this applies.

Rights are checked when a job is created and again at publish, from the current row of the key that
created the job, so a grant withdrawn (or a key revoked) in between stops the publish.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from hubtune.errors import JobError
from hubtune.models import ApiKey, HubCredential
from hubtune.settings import Settings

# The hub's rule for a namespace (plugin.repo_id checks whole repo ids the same way).
_NAMESPACE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
MAX_NAMESPACES = 100


class NamespaceRefused(JobError):
    """A write the key's rights do not allow: a job error at publish, a 403 at the API."""

    code = "forbidden"

    def __init__(self, message: str, *, param: str = "hub.repo_id") -> None:
        super().__init__(self.code, message, param)


@dataclass(frozen=True)
class Rights:
    """What one key may do on the hub through the server's own access; a plain value, usable after
    its session is closed (the worker reads it once per stage)."""

    owner: str
    admin: bool = False
    namespaces: tuple[str, ...] = ()
    revoked: bool = False

    @classmethod
    def of(cls, key: ApiKey) -> Rights:
        return cls(owner=key.owner, admin=bool(key.is_admin), namespaces=tuple(key.namespaces or ()),
                   revoked=key.revoked_at is not None)

    def owns(self, repo_id: str) -> bool:
        """True when the key may write to `repo_id` (and see it when it is private)."""
        if self.revoked:
            return False
        if self.admin:
            return True
        namespace = namespace_of(repo_id)
        return namespace is not None and (namespace == self.owner or namespace in self.namespaces)


def namespace_of(repo_id: str) -> str | None:
    """'acme' for 'acme/x'; None for a repo id without a namespace (only admins write those)."""
    namespace, slash, _ = repo_id.partition("/")
    return namespace if slash else None


def rights_for(session: Session, *, key_id: str | None, owner: str) -> Rights:
    """The current rights of the key that created a job or trigger. A key deleted since counts as
    revoked; rows from before keys were recorded (key_id None) get their owner's namespace alone."""
    if key_id is None:
        return Rights(owner=owner)
    key = session.get(ApiKey, key_id)
    return Rights.of(key) if key is not None else Rights(owner=owner, revoked=True)


def write_refusal(rights: Rights, repo_id: str | None) -> str | None:
    """None when `rights` may publish to `repo_id` through the server's own hub access, else why not.

    repo_id None is the repo the server names itself (under HUBTUNE_HUB_NAMESPACE or the owner's
    name): an operator's choice, allowed to every live key.
    """
    if rights.revoked:
        return ("The API key that created this job has been revoked, so it may no longer publish through "
                "the server's hub access.")
    if repo_id is None or rights.owns(repo_id):
        return None
    allowed = ", ".join(f"'{n}'" for n in (rights.owner, *rights.namespaces))
    return (f"This API key may not publish to '{repo_id}': through the server's hub access a key writes only "
            f"to the namespaces it owns ({allowed}). An admin can grant a namespace (hubtune keys create "
            "--namespaces, or PATCH /v1/keys/{id}), or store your own hub token with POST "
            "/v1/hub/credentials to let the hub decide.")


def may_see(rights: Rights, repo_id: str, *, private: bool) -> bool:
    """Public repos are for everyone; a private one only for the keys that own its namespace."""
    return not private or rights.owns(repo_id)


def has_hub_credential(session: Session, owner: str) -> bool:
    """True when `owner` stored a hub token of their own: then the hub decides, not these rules."""
    return session.execute(
        select(HubCredential.id).where(HubCredential.owner == owner).limit(1)
    ).scalar_one_or_none() is not None


def owner_hub_token(session: Session, settings: Settings, owner: str) -> str | None:
    """The owner's newest stored hub token, decrypted; None when they stored none (then the server's
    own access is used, under the rules above). Two stored in the same clock tick: the later id wins
    (ids sort by creation, hubtune.ids), so every reader picks the same one."""
    from hubtune.crypto import decrypt

    stored = session.execute(
        select(HubCredential.token_encrypted).where(HubCredential.owner == owner)
        .order_by(HubCredential.created_at.desc(), HubCredential.id.desc()).limit(1)
    ).scalar_one_or_none()
    return decrypt(settings, stored) if stored is not None else None


def hub_token_for(session: Session, settings: Settings, owner: str) -> tuple[str | None, bool]:
    """(the token to reach the hub as `owner`, True when it is the server's own access). The one way
    the worker (worker/hub.py), the API (server/hub_models.py) and hub triggers pick a hub token: the
    owner's newest stored one, else the server's HUBTUNE_HUB_TOKEN (None: the hub's anonymous access)."""
    token = owner_hub_token(session, settings, owner)
    if token is not None:
        return token, False
    return (settings.hub_token.get_secret_value() if settings.hub_token else None), True


def parse_namespaces(values: Iterable[str]) -> list[str]:
    """Clean, deduplicated namespace names (order kept); ValueError naming the first bad one."""
    out: list[str] = []
    for raw in values:
        name = raw.strip()
        if not name:
            continue
        if not _NAMESPACE.fullmatch(name) or "--" in name or ".." in name:
            raise ValueError(f"invalid namespace {name!r}: use letters, digits, '.', '_' and '-' (at most 96), "
                             "starting and ending with a letter or digit")
        if name not in out:
            out.append(name)
    if len(out) > MAX_NAMESPACES:
        raise ValueError(f"at most {MAX_NAMESPACES} namespaces per key")
    return out
