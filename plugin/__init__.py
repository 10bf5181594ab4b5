"""The model-hub plugin: everything that talks to a hub (pull models/datasets, push adapters + cards).

Depends on hub libraries only; never on hubtune, server, worker, torch or transformers.
"""

from __future__ import annotations

import pathlib

from .base import Hub, VisibleOnly, folder_files
from .errors import (
    HubAuthError,
    HubConflict,
    HubError,
    HubUnavailable,
    InvalidRepoId,
    RepoNotFound,
    RevisionNotFound,
)
from .local import LocalHub
from .datasets import DatasetRef, is_dataset_ref, parse_dataset_ref
from .modelcard import read_card_metadata, render_model_card
from .repo_id import split_model_ref, validate_repo_id, validate_revision

BACKENDS = ("local", "hf")


def make_hub(
    *,
    backend: str,
    hub_dir: pathlib.Path,
    endpoint: str | None = None,
    token: str | None = None,
    cache_dir: pathlib.Path,
) -> Hub:
    """The configured hub: `local` (a folder at hub_dir) or `hf` (endpoint + token, downloads in cache_dir)."""
    if backend == "local":
        return LocalHub(pathlib.Path(hub_dir))
    if backend == "hf":
        from .hf import HFHub  # imported lazily: the local backend needs no HTTP stack

        return HFHub(endpoint=endpoint, token=token, cache_dir=pathlib.Path(cache_dir))
    raise ValueError(f"unknown hub backend {backend!r}: expected one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "DatasetRef",
    "Hub",
    "HubAuthError",
    "HubConflict",
    "HubError",
    "HubUnavailable",
    "InvalidRepoId",
    "LocalHub",
    "RepoNotFound",
    "RevisionNotFound",
    "VisibleOnly",
    "folder_files",
    "is_dataset_ref",
    "make_hub",
    "parse_dataset_ref",
    "read_card_metadata",
    "render_model_card",
    "split_model_ref",
    "validate_repo_id",
    "validate_revision",
]
