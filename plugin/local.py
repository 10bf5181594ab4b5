"""The embedded hub: a folder laid out as repos with real, immutable commits.

Layout of one repo (`<root>/models/<ns>/<name>`, or `<root>/datasets/...`):

    repo.json               {"private": ..., "created_at": ...}
    objects/<sha>/...       one complete, read-only snapshot folder per commit
    trees/<sha>.json        {path: {"size", "oid"}}: the git blob sha of every file of that commit
    refs/heads/<branch>     text file holding the branch's commit sha
    commits.jsonl           one line per commit: sha, parent, branch, message, time
    .lock                   flock'ed while committing, so concurrent publishers never lose a commit

A commit sha is sha1 over the parent sha and the sorted (path, blob sha) pairs, so it covers every
file name and byte. Commits are written as temp folder + rename and refs as temp file + os.replace,
so a reader never sees half a snapshot and a crash never leaves a ref pointing at nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping

from .base import EntryNotFound, folder_files
from .errors import HubConflict, HubError, InvalidRepoId, RepoNotFound, RevisionNotFound
from .repo_id import validate_repo_id, validate_repo_type, validate_revision

# Repo ids without a namespace live in a folder no valid namespace can be named ('@' is not allowed).
NO_NAMESPACE_DIR = "@"
_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]*")
_HEX = re.compile(r"[0-9a-f]{4,40}")
_SHA = re.compile(r"[0-9a-f]{40}")
_CHUNK = 1 << 20
Source = pathlib.Path | bytes


def git_blob_sha(path: pathlib.Path) -> str:
    """The git blob id of a file (what the Hub calls a file's `oid` and serves as its ETag)."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def commit_sha(parent: str | None, tree: Mapping[str, dict]) -> str:
    h = hashlib.sha1(f"parent {parent or ''}\n".encode())
    for path in sorted(tree):
        h.update(f"{path}\0{tree[path]['oid']}\n".encode())
    return h.hexdigest()


def validate_branch(repo_id: str, branch: str) -> str:
    validate_revision(branch, repo_id=repo_id)
    parts = branch.split("/")
    if not _BRANCH.fullmatch(branch) or any(not p or p.startswith(".") for p in parts) or branch.endswith(".lock"):
        raise InvalidRepoId(f"invalid branch name {branch!r}", repo_id=repo_id, revision=branch)
    return branch


class LocalHub:
    backend = "local"

    def __init__(self, root: pathlib.Path):
        self.root = pathlib.Path(root)

    # ----- the Hub protocol -------------------------------------------------------------------

    def resolve(self, repo_id: str, *, revision: str | None = None, repo_type: str = "model") -> str:
        revision = validate_revision("main" if revision is None else revision, repo_id=repo_id)
        repo = self._existing_repo(repo_id, repo_type)
        sha = self._read_ref(repo, revision)
        if sha is not None:
            return sha
        if _HEX.fullmatch(revision):
            return self._match_sha(repo, repo_id, revision)
        raise RevisionNotFound(repo_id, revision)

    def snapshot(self, repo_id: str, *, revision: str, repo_type: str = "model") -> pathlib.Path:
        sha = self.resolve(repo_id, revision=revision, repo_type=repo_type)
        return self._repo_dir(repo_id, repo_type) / "objects" / sha

    def read_file(self, repo_id: str, *, path: str, revision: str | None = None, repo_type: str = "model") -> bytes:
        _check_repo_path(repo_id, path)
        sha = self.resolve(repo_id, revision=revision, repo_type=repo_type)
        file = self._repo_dir(repo_id, repo_type) / "objects" / sha / path
        if not file.is_file():
            raise EntryNotFound(f"no file {path!r} in {repo_type} repo '{repo_id}' at {sha}", repo_id=repo_id, revision=sha)
        return file.read_bytes()

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
        validate_repo_id(repo_id)
        validate_branch(repo_id, branch)
        files = dict(folder_files(folder))
        self.create_repo(repo_id, repo_type=repo_type, private=private)
        return self.commit(repo_id, files=files, message=message, branch=branch, repo_type=repo_type)

    def is_private(self, repo_id: str, *, repo_type: str = "model") -> bool:
        return bool(self.repo_info(repo_id, repo_type=repo_type).get("private", True))

    def files(self, repo_id: str, *, revision: str, repo_type: str = "model") -> dict[str, str]:
        return {path: entry["oid"] for path, entry in self.tree(repo_id, revision=revision, repo_type=repo_type).items()}

    def url(self, repo_id: str, *, revision: str | None = None, repo_type: str = "model") -> str:
        repo = self._repo_dir(repo_id, repo_type)
        if revision is not None:
            with contextlib.suppress(HubError):
                return (repo / "objects" / self.resolve(repo_id, revision=revision, repo_type=repo_type)).as_uri()
        return repo.absolute().as_uri()

    # ----- lower-level operations (the test hub server and `hub import` use them) ----------------

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = True) -> bool:
        """Create an empty repo (no commits); True when it was created, False when it existed."""
        repo = self._repo_dir(repo_id, repo_type)
        if (repo / "repo.json").exists():
            return False
        repo.mkdir(parents=True, exist_ok=True)
        with self._locked(repo):
            if (repo / "repo.json").exists():
                return False
            meta = {"private": bool(private), "created_at": time.time()}
            _atomic_write(repo / "repo.json", json.dumps(meta).encode())
            return True

    def repo_info(self, repo_id: str, *, repo_type: str = "model") -> dict:
        return json.loads((self._existing_repo(repo_id, repo_type) / "repo.json").read_text())

    def branches(self, repo_id: str, *, repo_type: str = "model") -> dict[str, str]:
        heads = self._existing_repo(repo_id, repo_type) / "refs" / "heads"
        if not heads.is_dir():
            return {}
        refs = {p.relative_to(heads).as_posix(): p for p in heads.rglob("*") if p.is_file()}
        # Names with a dot-part are _atomic_write's temp files (branch names never have one).
        return {name: p.read_text().strip() for name, p in refs.items() if not any(x.startswith(".") for x in name.split("/"))}

    def create_branch(
        self, repo_id: str, *, branch: str, revision: str | None = None, repo_type: str = "model"
    ) -> str:
        """Point a new branch at `revision` (default: main's head). Raises HubConflict when it exists."""
        validate_branch(repo_id, branch)
        repo = self._existing_repo(repo_id, repo_type)
        sha = self.resolve(repo_id, revision=revision or "main", repo_type=repo_type)
        with self._locked(repo):
            if self._read_ref(repo, branch) is not None:
                raise HubConflict(f"branch '{branch}' already exists in repo '{repo_id}'", repo_id=repo_id)
            _atomic_write(self._ref_path(repo, branch), sha.encode())
        return sha

    def tree(self, repo_id: str, *, revision: str, repo_type: str = "model") -> dict[str, dict]:
        """{path: {"size", "oid"}} of every file at `revision`."""
        sha = self.resolve(repo_id, revision=revision, repo_type=repo_type)
        return self._tree(self._repo_dir(repo_id, repo_type), sha)

    def log(self, repo_id: str, *, repo_type: str = "model") -> list[dict]:
        path = self._existing_repo(repo_id, repo_type) / "commits.jsonl"
        if not path.exists():
            return []
        entries = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a crash mid-append
                entries.append(json.loads(line))
        return entries

    def commit(
        self,
        repo_id: str,
        *,
        files: Mapping[str, Source],
        message: str,
        branch: str = "main",
        deletions: Iterable[str] = (),
        parent_commit: str | None = None,
        repo_type: str = "model",
    ) -> str:
        """One commit on `branch`: the head's files, minus `deletions`, overlaid with `files`.

        A missing branch starts from main's head (an orphan when main has no commit). With
        `parent_commit`, the commit is refused (HubConflict) unless the branch head is exactly it.
        When the result equals the head, nothing is committed and the head sha is returned.
        """
        validate_branch(repo_id, branch)
        deletions = set(deletions)
        for path in [*files, *deletions]:
            _check_repo_path(repo_id, path)
        repo = self._existing_repo(repo_id, repo_type)
        described = {p: _describe(src) for p, src in files.items()}  # hash big files before locking
        with self._locked(repo):
            head = self._read_ref(repo, branch)
            if parent_commit is not None and parent_commit != head:
                raise HubConflict(
                    f"branch '{branch}' of '{repo_id}' is at {head}, not at the expected parent {parent_commit}",
                    repo_id=repo_id,
                    revision=branch,
                )
            base = head if head is not None else self._read_ref(repo, "main")
            return self._commit_locked(repo, branch, base, head, files, described, deletions, message)

    # ----- internals --------------------------------------------------------------------------

    def _commit_locked(self, repo, branch, base, head, files, described, deletions, message) -> str:
        old_tree = self._tree(repo, base) if base else {}
        kept = [p for p in old_tree if p not in files and not _deleted(p, deletions)]
        tree = {p: old_tree[p] for p in kept} | described
        if base is not None and tree == old_tree:
            # Nothing changed: no empty commit (the Hub does the same); a new branch just points at base.
            if head is None:
                _atomic_write(self._ref_path(repo, branch), base.encode())
            return base
        sha = commit_sha(base, tree)
        # Files equal to the parent's (kept, or re-sent unchanged) are linked, not copied again.
        same = {p for p in tree if p in old_tree and tree[p] == old_tree[p]}
        linked = {p: repo / "objects" / base / p for p in same}
        new_files = {p: src for p, src in files.items() if p not in same}
        self._write_snapshot(repo, sha, linked, new_files, tree)
        entry = {"sha": sha, "parent": base, "branch": branch, "message": message, "time": time.time()}
        with open(repo / "commits.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        _atomic_write(self._ref_path(repo, branch), sha.encode())
        return sha

    def _write_snapshot(self, repo, sha: str, linked: Mapping[str, pathlib.Path], files, tree: dict) -> None:
        target = repo / "objects" / sha
        if target.exists():
            return  # same parent and same files: identical content, already written
        _atomic_write(repo / "trees" / f"{sha}.json", json.dumps(tree, sort_keys=True).encode())
        tmp = repo / "objects" / f".tmp-{uuid.uuid4().hex}"
        try:
            for path, src in linked.items():
                _link_or_copy(src, tmp / path)
            for path, src in files.items():
                _write_file(src, tmp / path)
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _tree(self, repo: pathlib.Path, sha: str) -> dict[str, dict]:
        manifest = repo / "trees" / f"{sha}.json"
        if manifest.exists():
            return json.loads(manifest.read_text())
        folder = repo / "objects" / sha  # a snapshot written by hand: describe it from its files
        return {p.relative_to(folder).as_posix(): _describe(p) for p in folder.rglob("*") if p.is_file()}

    def _repo_dir(self, repo_id: str, repo_type: str) -> pathlib.Path:
        validate_repo_id(repo_id)
        validate_repo_type(repo_type)
        ns, _, name = repo_id.rpartition("/")
        return self.root / f"{repo_type}s" / (ns or NO_NAMESPACE_DIR) / name

    def _existing_repo(self, repo_id: str, repo_type: str) -> pathlib.Path:
        repo = self._repo_dir(repo_id, repo_type)
        if not (repo / "repo.json").exists():
            # No folder in the message: errors reach API answers and job errors.
            raise RepoNotFound(repo_id, repo_type=repo_type)
        return repo

    def _ref_path(self, repo: pathlib.Path, branch: str) -> pathlib.Path:
        return repo / "refs" / "heads" / branch

    def _read_ref(self, repo: pathlib.Path, branch: str) -> str | None:
        if not _BRANCH.fullmatch(branch) or ".." in branch:
            return None
        path = self._ref_path(repo, branch)
        return path.read_text().strip() if path.is_file() else None

    def _match_sha(self, repo: pathlib.Path, repo_id: str, prefix: str) -> str:
        objects = repo / "objects"
        names = os.listdir(objects) if objects.is_dir() else []
        matches = [n for n in names if _SHA.fullmatch(n) and n.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        detail = "ambiguous commit prefix" if matches else "no such branch or commit"
        raise RevisionNotFound(repo_id, prefix, detail=detail)

    @contextlib.contextmanager
    def _locked(self, repo: pathlib.Path) -> Iterator[None]:
        # A fresh open per acquisition: flock locks belong to the open file, so this also
        # serialises threads of one process (the test hub server), not only processes.
        with open(repo / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _check_repo_path(repo_id: str, path: str) -> None:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in path:
        raise HubError(f"invalid file path {path!r} for repo '{repo_id}'", repo_id=repo_id)


def _describe(src: Source) -> dict:
    if isinstance(src, bytes):
        return {"size": len(src), "oid": hashlib.sha1(b"blob %d\0" % len(src) + src).hexdigest()}
    return {"size": pathlib.Path(src).stat().st_size, "oid": git_blob_sha(pathlib.Path(src))}


def _deleted(path: str, deletions: set[str]) -> bool:
    return any(path == d.rstrip("/") or path.startswith(d.rstrip("/") + "/") for d in deletions)


def _link_or_copy(src: pathlib.Path, dest: pathlib.Path) -> None:
    """Unchanged files are hard links into the parent snapshot: snapshots are immutable, so sharing is safe."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        _write_file(src, dest)


def _write_file(src: Source, dest: pathlib.Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, bytes):
        dest.write_bytes(src)
    else:
        shutil.copyfile(src, dest)
    os.chmod(dest, 0o444)  # snapshots are for reading; a stray write would corrupt every commit sharing it


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; other service users (server, workers) read these
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
