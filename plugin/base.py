"""The Hub protocol both backends implement, and the folder walk they share."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .errors import HubError, RepoNotFound

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

    def is_private(self, repo_id: str, *, repo_type: str = "model") -> bool:
        """Whether the repo is private (RepoNotFound when it is missing or hidden from this client)."""
        ...

    def files(self, repo_id: str, *, revision: str, repo_type: str = "model") -> dict[str, str]:
        """{path: git blob sha} of every file at `revision` (what changed between two commits)."""
        ...

    def url(self, repo_id: str, *, revision: str | None = None, repo_type: str = "model") -> str:
        """Human link to the repo (http URL for hf, file:// URI for local)."""
        ...


class VisibleOnly:
    """A hub that shows only the repos `may_see(repo_id, private)` allows; any other answers exactly as a
    missing repo does (RepoNotFound), so a caller cannot tell another owner's private repo from no repo.
    The server's own hub access reaches every repo: this keeps each key to what it may read."""

    def __init__(self, hub: Hub, *, may_see: Callable[[str, bool], bool]) -> None:
        self.backend = hub.backend
        self._hub, self._may_see = hub, may_see
        self._visible: set[tuple[str, str]] = set()  # checked once per repo: one extra call, not one per read

    def _check(self, repo_id: str, repo_type: str) -> None:
        if (repo_id, repo_type) in self._visible:
            return
        private = self._hub.is_private(repo_id, repo_type=repo_type)  # RepoNotFound when it is missing
        if not self._may_see(repo_id, private):
            raise RepoNotFound(repo_id, repo_type=repo_type)
        self._visible.add((repo_id, repo_type))

    def resolve(self, repo_id: str, *, revision: str | None = None, repo_type: str = "model") -> str:
        self._check(repo_id, repo_type)
        return self._hub.resolve(repo_id, revision=revision, repo_type=repo_type)

    def snapshot(self, repo_id: str, *, revision: str, repo_type: str = "model") -> pathlib.Path:
        self._check(repo_id, repo_type)
        return self._hub.snapshot(repo_id, revision=revision, repo_type=repo_type)

    def read_file(self, repo_id: str, *, path: str, revision: str | None = None, repo_type: str = "model") -> bytes:
        self._check(repo_id, repo_type)
        return self._hub.read_file(repo_id, path=path, revision=revision, repo_type=repo_type)

    def is_private(self, repo_id: str, *, repo_type: str = "model") -> bool:
        self._check(repo_id, repo_type)
        return self._hub.is_private(repo_id, repo_type=repo_type)

    def files(self, repo_id: str, *, revision: str, repo_type: str = "model") -> dict[str, str]:
        self._check(repo_id, repo_type)
        return self._hub.files(repo_id, revision=revision, repo_type=repo_type)

    def url(self, repo_id: str, *, revision: str | None = None, repo_type: str = "model") -> str:
        self._check(repo_id, repo_type)
        return self._hub.url(repo_id, revision=revision, repo_type=repo_type)

    def publish(self, repo_id: str, *, folder: pathlib.Path, message: str, branch: str = "main",
                private: bool = True, repo_type: str = "model") -> str:
        # Writes are not this class's business: the caller checks who may write where before publishing.
        return self._hub.publish(repo_id, folder=folder, message=message, branch=branch, private=private,
                                 repo_type=repo_type)


class EntryNotFound(HubError):
    """The repo and revision exist but hold no file at that path."""

    code = "entry_not_found"


def folder_files(folder: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    """(posix path in repo, file path) for every publishable file under `folder`, sorted by repo path."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ValueError("the folder to publish does not exist or is not a directory")  # no server path
    files = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or _ignored(rel):
            continue
        files.append((rel, path))
    if not files:
        raise ValueError("the folder to publish has no files")
    return sorted(files)


def _ignored(rel: str) -> bool:
    parts = rel.split("/")
    return any(p in IGNORED_DIRS for p in parts) or any(
        rel == prefix or rel.startswith(prefix + "/") for prefix in IGNORED_PREFIXES
    )
