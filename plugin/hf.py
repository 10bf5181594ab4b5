"""The `hf` backend: any Hugging Face compatible hub, through the unmodified huggingface_hub client."""

from __future__ import annotations

import contextlib
import importlib
import pathlib
from collections.abc import Iterator
from urllib.parse import quote

from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import RemoteEntryNotFoundError
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .base import EntryNotFound, folder_files
from .errors import HubAuthError, HubConflict, HubError, HubUnavailable, InvalidRepoId, RepoNotFound, RevisionNotFound
from .repo_id import validate_repo_id, validate_repo_type, validate_revision


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection/timeout errors of whichever HTTP stack this huggingface_hub version uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, OfflineModeIsEnabled]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        with contextlib.suppress(ImportError):
            mod = importlib.import_module(module)
            errors += [getattr(mod, name) for name in names if hasattr(mod, name)]
    return tuple(errors)


TRANSPORT_ERRORS = _transport_errors()
_OPTIONAL_UNAVAILABLE = tuple(
    getattr(importlib.import_module("huggingface_hub.errors"), name)
    for name in ("IncompleteSnapshotError", "XetDownloadError")
    if hasattr(importlib.import_module("huggingface_hub.errors"), name)
)


class HFHub:
    backend = "hf"

    def __init__(self, *, endpoint: str | None, token: str | None, cache_dir: pathlib.Path):
        # Pass the endpoint explicitly everywhere: huggingface_hub reads HF_ENDPOINT once, at import.
        self.endpoint = (endpoint or hf_constants.ENDPOINT).rstrip("/")
        self.cache_dir = pathlib.Path(cache_dir)
        self._token = token  # None: huggingface_hub's own default (HF_TOKEN or the saved login)
        self._api = HfApi(endpoint=self.endpoint, token=token)

    def __repr__(self) -> str:  # never show the token
        return f"HFHub(endpoint={self.endpoint!r}, cache_dir={str(self.cache_dir)!r})"

    def resolve(self, repo_id: str, *, revision: str | None = None, repo_type: str = "model") -> str:
        revision = self._check(repo_id, "main" if revision is None else revision, repo_type)
        with self._translate(repo_id, revision, repo_type):
            info = self._api.repo_info(repo_id, repo_type=repo_type, revision=revision)
        if not info.sha:
            raise HubError(f"hub gave no commit sha for '{repo_id}'@{revision}", repo_id=repo_id, revision=revision)
        return info.sha

    def snapshot(self, repo_id: str, *, revision: str, repo_type: str = "model") -> pathlib.Path:
        revision = self._check(repo_id, revision, repo_type)
        with self._translate(repo_id, revision, repo_type):
            path = snapshot_download(
                repo_id,
                revision=revision,
                repo_type=repo_type,
                cache_dir=str(self.cache_dir),
                endpoint=self.endpoint,
                token=self._token,
            )
        return pathlib.Path(path)

    def read_file(self, repo_id: str, *, path: str, revision: str | None = None, repo_type: str = "model") -> bytes:
        revision = self._check(repo_id, "main" if revision is None else revision, repo_type)
        with self._translate(repo_id, revision, repo_type):
            try:
                local = hf_hub_download(
                    repo_id, filename=path, revision=revision, repo_type=repo_type, cache_dir=str(self.cache_dir),
                    endpoint=self.endpoint, token=self._token,
                )
            except RemoteEntryNotFoundError as err:  # the repo is there, the file is not (not a RepoNotFound)
                raise EntryNotFound(f"no file {path!r} in {repo_type} repo '{repo_id}'@{revision}",
                                    repo_id=repo_id, revision=revision) from err
        return pathlib.Path(local).read_bytes()

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
        self._check(repo_id, branch, repo_type)
        # Built before any network call so a bad folder fails fast. create_commit rather than
        # upload_folder: with hf_xet installed, upload_folder may split a folder into several commits.
        operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path)) for rel, path in folder_files(folder)]
        with self._translate(repo_id, branch, repo_type):
            self._api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
            if branch != "main":
                self._api.create_branch(repo_id, branch=branch, repo_type=repo_type, exist_ok=True)
            # Commit on top of the head we saw: if the branch moves meanwhile, the hub refuses (412) and the
            # caller retries on the new head instead of silently committing over someone else's push.
            parent = self._api.repo_info(repo_id, repo_type=repo_type, revision=branch).sha
            info = self._api.create_commit(
                repo_id, operations=operations, commit_message=message, revision=branch, repo_type=repo_type,
                parent_commit=parent,
            )
        return info.oid

    def is_private(self, repo_id: str, *, repo_type: str = "model") -> bool:
        self._check(repo_id, "main", repo_type)
        with self._translate(repo_id, None, repo_type):
            info = self._api.repo_info(repo_id, repo_type=repo_type)
        return info.private is not False  # a hub that does not say counts as private: fail closed

    def files(self, repo_id: str, *, revision: str, repo_type: str = "model") -> dict[str, str]:
        revision = self._check(repo_id, revision, repo_type)
        with self._translate(repo_id, revision, repo_type):
            entries = self._api.list_repo_tree(repo_id, revision=revision, repo_type=repo_type, recursive=True)
            return {e.path: e.blob_id for e in entries if getattr(e, "blob_id", None) and hasattr(e, "size")}

    def url(self, repo_id: str, *, revision: str | None = None, repo_type: str = "model") -> str:
        validate_repo_id(repo_id)
        prefix = "" if validate_repo_type(repo_type) == "model" else f"{repo_type}s/"
        link = f"{self.endpoint}/{prefix}{repo_id}"
        return f"{link}/tree/{quote(revision, safe='')}" if revision else link

    def _check(self, repo_id: str, revision: str, repo_type: str) -> str:
        validate_repo_id(repo_id)
        validate_repo_type(repo_type)
        return validate_revision(revision, repo_id=repo_id)

    @contextlib.contextmanager
    def _translate(self, repo_id: str, revision: str | None, repo_type: str) -> Iterator[None]:
        try:
            yield
        except HubError:
            raise
        except Exception as err:  # noqa: BLE001 - every client error becomes a plugin error
            mapped = translate_error(err, repo_id=repo_id, revision=revision, repo_type=repo_type)
            if mapped is None:
                raise
            mapped.args = (_scrub(str(mapped), self._token),)
            mapped.message = mapped.args[0]
            raise mapped from err


def translate_error(
    err: BaseException, *, repo_id: str, revision: str | None, repo_type: str = "model"
) -> HubError | None:
    """The plugin error for a huggingface_hub / HTTP-stack error, or None when it is not a hub error."""
    ctx = {"repo_id": repo_id, "revision": revision}
    where = f"'{repo_id}'" + (f"@{revision}" if revision else "")
    if isinstance(err, LocalEntryNotFoundError):
        # snapshot_download hides the real failure (auth, 5xx, offline) behind "not in the local cache".
        cause = err.__cause__ or err.__context__
        mapped = translate_error(cause, **ctx, repo_type=repo_type) if cause is not None else None
        return mapped or HubUnavailable(f"hub unreachable and {where} is not cached: {_first_line(err)}", **ctx)
    if isinstance(err, GatedRepoError):
        return HubAuthError(f"access to gated repo {where} was refused: {_first_line(err)}", **ctx)
    if isinstance(err, RevisionNotFoundError):
        return RevisionNotFound(repo_id, revision or "main", detail=_server_message(err))
    if isinstance(err, RepositoryNotFoundError):
        return RepoNotFound(repo_id, repo_type=repo_type)
    if isinstance(err, HfHubHTTPError):
        return _from_status(err, where, ctx)
    if isinstance(err, HFValidationError):
        return InvalidRepoId(f"invalid repo id or revision {where}: {err}", **ctx)
    if isinstance(err, TRANSPORT_ERRORS + _OPTIONAL_UNAVAILABLE):
        return HubUnavailable(f"hub unreachable for {where}: {type(err).__name__}: {_first_line(err)}", **ctx)
    return None


def _from_status(err: HfHubHTTPError, where: str, ctx: dict) -> HubError:
    status = err.response.status_code if err.response is not None else None
    text = f"HTTP {status} from hub for {where}: {_server_message(err)}"
    if status in (401, 403):
        return HubAuthError(text, **ctx)
    if status == 404:
        return RepoNotFound(ctx["repo_id"], detail=text)
    if status in (409, 412):
        return HubConflict(text, **ctx)
    if status is None or status == 429 or status >= 500:
        return HubUnavailable(text, **ctx)
    return HubError(text, **ctx)


def _server_message(err: HfHubHTTPError) -> str:
    """What the hub said (X-Error-Message or the body's error), else the client's first line."""
    return (getattr(err, "server_message", None) or _first_line(err)).strip().splitlines()[0][:300]


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text
