"""Hub dataset file references: `hf://datasets/org/name[@revision]/path/in/repo.jsonl`.

Parsed and checked before any I/O: the repo id by the hub's rules, the revision like any revision, and
the path so that it can never leave the repo's folder (it becomes a local path when pulled).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidRepoId
from .repo_id import validate_repo_id, validate_revision

PREFIX = "hf://datasets/"
_PATH_PART = re.compile(r"[A-Za-z0-9._@+=,() -]+")


@dataclass(frozen=True)
class DatasetRef:
    repo_id: str
    revision: str | None
    path: str

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{PREFIX}{self.repo_id}{rev}/{self.path}"

    def pinned(self, commit: str) -> DatasetRef:
        return DatasetRef(self.repo_id, commit, self.path)


def is_dataset_ref(value: str | None) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def parse_dataset_ref(ref: str) -> DatasetRef:
    """`hf://datasets/org/name@rev/dir/train.jsonl` -> DatasetRef("org/name", "rev", "dir/train.jsonl")."""
    if not is_dataset_ref(ref):
        raise InvalidRepoId(f"invalid hub dataset reference {ref!r}: expected {PREFIX}org/name[@revision]/path")
    parts = ref[len(PREFIX):].split("/")
    if len(parts) < 3:
        raise InvalidRepoId(f"invalid hub dataset reference {ref!r}: expected {PREFIX}org/name[@revision]/path")
    namespace, name_rev, path_parts = parts[0], parts[1], parts[2:]
    name, sep, revision = name_rev.partition("@")
    repo_id = validate_repo_id(f"{namespace}/{name}")
    if sep:
        validate_revision(revision, repo_id=repo_id)
    for part in path_parts:
        if part in ("", ".", "..") or not _PATH_PART.fullmatch(part):
            raise InvalidRepoId(f"invalid file path in hub dataset reference {ref!r}", repo_id=repo_id)
    return DatasetRef(repo_id, revision if sep else None, "/".join(path_parts))
