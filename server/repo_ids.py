"""Model reference and repo id syntax checks for job requests, before anything reaches a hub.

The rules live in the hub plugin (`plugin.validate_repo_id`, `plugin.split_model_ref`); they are pure
string checks, so the server runs them at request time without touching any hub.
"""

from __future__ import annotations

from plugin import split_model_ref, validate_repo_id


class InvalidModelRef(ValueError):
    pass


def check_repo_id(repo_id: str) -> str:
    try:
        return validate_repo_id(repo_id)
    except ValueError as exc:  # plugin.InvalidRepoId is a ValueError
        raise InvalidModelRef(str(exc)) from None


def check_model_ref(ref: str) -> tuple[str, str | None]:
    try:
        return split_model_ref(ref)
    except ValueError as exc:
        raise InvalidModelRef(str(exc)) from None
