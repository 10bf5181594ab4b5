"""The errors every hub backend raises, so callers never see a backend's own exceptions.

Each error carries a stable `code` (used in job errors and API answers), the repo and revision it is
about, and `retryable`: whether trying the same call again later may succeed.
"""

from __future__ import annotations


class HubError(Exception):
    """Base of all hub errors."""

    code = "hub_error"
    retryable = False

    def __init__(self, message: str, *, repo_id: str | None = None, revision: str | None = None):
        super().__init__(message)
        self.message = message
        self.repo_id = repo_id
        self.revision = revision


class InvalidRepoId(HubError, ValueError):
    """A repo id (or model reference) that breaks the hub's naming rules; caught before any I/O."""

    code = "invalid_repo_id"


# What every backend says about a repo it cannot show, whether it is missing or hidden from the caller,
# so that the answer never tells which (and never names a server folder).
NOT_FOUND_DETAIL = "it does not exist, or you may not see it"


class RepoNotFound(HubError):
    code = "repo_not_found"

    def __init__(self, repo_id: str, *, repo_type: str = "model", detail: str = NOT_FOUND_DETAIL):
        message = f"{repo_type} repo '{repo_id}' not found" + (f": {detail}" if detail else "")
        super().__init__(message, repo_id=repo_id)


class RevisionNotFound(HubError):
    code = "revision_not_found"

    def __init__(self, repo_id: str, revision: str, *, detail: str = ""):
        message = f"revision '{revision}' not found in repo '{repo_id}'" + (f": {detail}" if detail else "")
        super().__init__(message, repo_id=repo_id, revision=revision)


class HubAuthError(HubError):
    """401/403: the token is missing, wrong, or lacks the permission for this repo."""

    code = "hub_auth_error"


class HubConflict(HubError):
    """The branch moved while we committed (expected parent commit is no longer the head)."""

    code = "hub_conflict"
    retryable = True


class HubUnavailable(HubError):
    """The hub could not be reached or failed (connection error, timeout, 429, 5xx)."""

    code = "hub_unavailable"
    retryable = True
