"""The Hub protocol both backends implement, and the folder walk they share."""

from __future__ import annotations

import pathlib
from typing import Protocol, runtime_checkable

from .errors import HubError

# Never published: VCS internals and huggingface_hub's own download metadata (the same set
# huggingface_hub's upload_folder skips), so both backends publish the same files.
IGNORED_DIRS = {".git"}
IGNORED_PREFIXES = (".cache/huggingface",)


@runtime_checkable
class Hub(Protocol):
    backend: str

    def resolve(self, repo_id: str, *, revision: str | None = None, repo_type: str = "model") -> str:
        """Full commit sha of `revision` (branch, tag or sha; None means "main")."""
        ...

    def snapshot(self, repo_id: str, *, revision: str, repo_type: str = "model") -> pathlib.Path:
        """Local folder holding the repo files at `revision` (cached; read-only use)."""
        ...

    def read_file(self, repo_id: str, *, path: str, revision: str | None = None, repo_type: str = "model") -> bytes:
        """The bytes of one file at `revision` (None means "main"), without fetching the rest of the repo
        (e.g. config.json without the weights). Raises EntryNotFound when the file is not there."""
        ...

    def publish(
        self,
        repo_id: str,
        *,
        folder: pathlib.Path,
        message: str,
        branch: str = "main",
        private: bool = True,
        repo_type: str = "model",
    ) -> str:
        """Create the repo (and branch) when missing, upload every file of `folder` in one commit.

        Returns the commit sha. Files already in the repo and absent from `folder` are kept.
        When nothing changed, no commit is made and the current head sha is returned.
        """
        ...

    def files(self, repo_id: str, *, revision: str, repo_type: str = "model") -> dict[str, str]:
        """{path: git blob sha} of every file at `revision` (what changed between two commits)."""
        ...

    def url(self, repo_id: str, *, revision: str | None = None, repo_type: str = "model") -> str:
        """Human link to the repo (http URL for hf, file:// URI for local)."""
        ...


class EntryNotFound(HubError):
    """The repo and revision exist but hold no file at that path."""

    code = "entry_not_found"


def folder_files(folder: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    """(posix path in repo, file path) for every publishable file under `folder`, sorted by repo path."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder to publish does not exist or is not a directory: {folder}")
    files = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or _ignored(rel):
            continue
        files.append((rel, path))
    if not files:
        raise ValueError(f"folder to publish has no files: {folder}")
    return sorted(files)


def _ignored(rel: str) -> bool:
    parts = rel.split("/")
    return any(p in IGNORED_DIRS for p in parts) or any(
        rel == prefix or rel.startswith(prefix + "/") for prefix in IGNORED_PREFIXES
    )
