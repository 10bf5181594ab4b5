"""Repo id and model reference checks, done before any network or disk access.

A repo id becomes a URL path on a hub and a folder path in the local hub, so a bad one must never get
that far (think `../../etc`).
"""

from __future__ import annotations

import re

from .errors import InvalidRepoId

MAX_PART_LENGTH = 96
_PART = re.compile(r"[A-Za-z0-9._-]+")
REPO_TYPES = ("model", "dataset")


def _check_part(repo_id: str, part: str, what: str) -> None:
    if not part:
        raise InvalidRepoId(f"invalid repo id '{repo_id}': empty {what}", repo_id=repo_id)
    if len(part) > MAX_PART_LENGTH:
        raise InvalidRepoId(
            f"invalid repo id '{repo_id}': {what} is longer than {MAX_PART_LENGTH} characters", repo_id=repo_id
        )
    if not _PART.fullmatch(part):
        raise InvalidRepoId(
            f"invalid repo id '{repo_id}': {what} may only contain letters, digits, '.', '_' and '-'",
            repo_id=repo_id,
        )
    if "--" in part or ".." in part:
        raise InvalidRepoId(f"invalid repo id '{repo_id}': '--' and '..' are not allowed", repo_id=repo_id)
    if part[0] in "-." or part[-1] in "-.":
        raise InvalidRepoId(
            f"invalid repo id '{repo_id}': {what} may not start or end with '-' or '.'", repo_id=repo_id
        )


def validate_repo_id(repo_id: str) -> str:
    """Return `repo_id` unchanged when it is `name` or `namespace/name` by the hub's rules, else raise."""
    if not isinstance(repo_id, str):
        raise InvalidRepoId(f"repo id must be a string, got {type(repo_id).__name__}")
    parts = repo_id.split("/")
    if len(parts) > 2:
        raise InvalidRepoId(f"invalid repo id '{repo_id}': expected 'name' or 'namespace/name'", repo_id=repo_id)
    if len(parts) == 2:
        _check_part(repo_id, parts[0], "namespace")
    _check_part(repo_id, parts[-1], "name")
    return repo_id


def validate_revision(revision: str, *, repo_id: str | None = None) -> str:
    """A branch, tag or commit sha: non-empty, no whitespace, no '..' (it ends up in URLs and file names)."""
    if not isinstance(revision, str) or not revision or revision != revision.strip():
        raise InvalidRepoId(f"invalid revision {revision!r}", repo_id=repo_id, revision=str(revision))
    if any(c.isspace() for c in revision) or ".." in revision or revision.startswith("/"):
        raise InvalidRepoId(f"invalid revision {revision!r}", repo_id=repo_id, revision=revision)
    return revision


def validate_repo_type(repo_type: str) -> str:
    if repo_type not in REPO_TYPES:
        raise ValueError(f"unsupported repo_type {repo_type!r}: expected one of {', '.join(REPO_TYPES)}")
    return repo_type


def split_model_ref(ref: str) -> tuple[str, str | None]:
    """`org/name@revision` -> (`org/name`, `revision`); `org/name` -> (`org/name`, None)."""
    if not isinstance(ref, str):
        raise InvalidRepoId(f"model reference must be a string, got {type(ref).__name__}")
    repo_id, sep, revision = ref.partition("@")
    validate_repo_id(repo_id)
    if not sep:
        return repo_id, None
    return repo_id, validate_revision(revision, repo_id=repo_id)
