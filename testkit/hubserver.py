"""A Hugging Face Hub compatible HTTP server for tests (no network needed).

The unmodified huggingface_hub client talks to it through `endpoint=server.url`: create_repo,
repo_info / model_info / dataset_info, create_branch, list_repo_refs, list_repo_tree,
get_paths_info, create_commit / upload_folder / upload_file, hf_hub_download and snapshot_download.

Repos are stored in a LocalHub under a temp folder (`server.hub`, usable directly to seed repos).
Uploads: preupload answers every file with `uploadMode: "regular"`, so the client sends contents
inline in the commit and never needs Xet or LFS storage.

Test knobs:
    server.token = "secret"            every request must carry `Authorization: Bearer secret` (401 else)
    server.fail_next(2, status=500)    the next 2 commit calls answer 500 (endpoint="any"/"info"/... too)
    server.forbid("acme/x")            every call about that repo answers 403
    server.calls                       [(method, endpoint name, path)] of every request, in order

Use:
    with HubServer(tmp_path) as server:
        HfApi(endpoint=server.url).create_repo("acme/x")
or the `hub_server` fixture of tests/plugin/conftest.py.
"""

from __future__ import annotations

import base64
import json
import pathlib
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qsl, unquote

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from plugin.errors import HubConflict, InvalidRepoId, RepoNotFound, RevisionNotFound
from plugin.local import LocalHub
from plugin.repo_id import validate_repo_id

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
KINDS = {"models": "model", "datasets": "dataset"}


class HubHTTPError(Exception):
    """Raised inside handlers; becomes a Hub-style error response (X-Error-Code / X-Error-Message)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def response(self) -> Response:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return JSONResponse({"error": self.message}, status_code=self.status, headers=headers)


@dataclass
class _Fault:
    endpoint: str
    status: int
    remaining: int


class HubServer:
    def __init__(self, root: pathlib.Path, *, token: str | None = None):
        self.hub = LocalHub(pathlib.Path(root))
        self.token = token
        self.calls: list[tuple[str, str, str]] = []
        self._faults: list[_Fault] = []
        self._forbidden: set[str] = set()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.app = build_app(self)

    # ----- test knobs ---------------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 500, endpoint: str = "commit") -> None:
        """Answer the next `n` calls of `endpoint` (a name from `calls`, or "any") with `status`."""
        with self._lock:
            self._faults.append(_Fault(endpoint, status, n))

    def forbid(self, repo_id: str) -> None:
        self._forbidden.add(repo_id)

    def allow(self, repo_id: str) -> None:
        self._forbidden.discard(repo_id)

    def count(self, endpoint: str) -> int:
        return sum(1 for _, name, _ in self.calls if name == endpoint)

    # ----- lifecycle ----------------------------------------------------------------------------

    def start(self) -> HubServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))  # a free port, held from now on: no race with other tests
        port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test hub server did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----- request guard ------------------------------------------------------------------------

    def guard(self, request: Request, endpoint: str, repo_id: str | None = None) -> None:
        """Record the call, then apply injected faults, the token check and forbidden repos."""
        self.calls.append((request.method, endpoint, request.url.path))
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.endpoint in (endpoint, "any"):
                    fault.remaining -= 1
                    raise HubHTTPError(fault.status, f"injected failure ({fault.status}) on {endpoint}")
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        if repo_id is not None and repo_id in self._forbidden:
            raise HubHTTPError(403, f"You don't have the rights to access '{repo_id}'")


# ----- the app ------------------------------------------------------------------------------------


def build_app(server: HubServer) -> Starlette:
    def route(path: str, handler, endpoint: str, methods=("GET",)) -> Route:
        async def wrapped(request: Request) -> Response:
            # Read the body here (Starlette's body API is async), then run the sync handler in a
            # thread so slow commits (LocalHub holds a file lock) never block the event loop.
            request.scope["hubtest.body"] = await request.body()
            try:
                return await run_in_threadpool(handler, server, request, endpoint)
            except HubHTTPError as err:
                return err.response()

        return Route(path, wrapped, methods=list(methods))

    return Starlette(
        routes=[
            route("/api/repos/create", create_repo, "create", ["POST"]),
            route("/api/validate-yaml", validate_yaml, "validate", ["POST"]),
            route("/api/whoami-v2", whoami, "whoami"),
            route("/api/{kind}/{repo:path}/revision/{rev:path}", repo_info, "info"),
            route("/api/{kind}/{repo:path}/tree/{rest:path}", tree, "tree"),
            route("/api/{kind}/{repo:path}/refs", refs, "refs"),
            route("/api/{kind}/{repo:path}/paths-info/{rev:path}", paths_info, "paths-info", ["POST"]),
            route("/api/{kind}/{repo:path}/preupload/{rev:path}", preupload, "preupload", ["POST"]),
            route("/api/{kind}/{repo:path}/commit/{rev:path}", commit, "commit", ["POST"]),
            route("/api/{kind}/{repo:path}/branch/{branch:path}", create_branch, "branch", ["POST"]),
            route("/api/{kind}/{repo:path}", repo_info, "info"),
            route("/{repo:path}/resolve/{rest:path}", download, "resolve", ["GET", "HEAD"]),
        ]
    )


# ----- helpers ------------------------------------------------------------------------------------


def _repo(server: HubServer, request: Request, endpoint: str) -> tuple[str, str]:
    """(repo_id, repo_type) of an /api/{kind}/{repo}/... call, after the guard."""
    kind, repo_id = request.path_params["kind"], request.path_params["repo"]
    server.guard(request, endpoint, repo_id)
    if kind not in KINDS:
        raise HubHTTPError(404, f"unsupported repo kind '{kind}'")
    try:
        validate_repo_id(repo_id)
    except InvalidRepoId as err:
        raise HubHTTPError(400, str(err)) from err
    return repo_id, KINDS[kind]


def _resolve(server: HubServer, repo_id: str, repo_type: str, rev: str) -> str:
    try:
        return server.hub.resolve(repo_id, revision=rev, repo_type=repo_type)
    except RepoNotFound as err:
        raise HubHTTPError(404, "Repository not found", "RepoNotFound") from err
    except (RevisionNotFound, InvalidRepoId) as err:
        raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound") from err


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _repo_url(request: Request, repo_id: str, repo_type: str) -> str:
    return f"{_base(request)}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"


def _raw_after(request: Request, prefix: str) -> tuple[str, str]:
    """(revision, path) from the raw URL after `prefix`: a revision may hold an encoded '/' (%2F)."""
    raw = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    rest = raw[len(prefix):] if raw.startswith(prefix) else request.path_params["rest"]
    rev, _, path = rest.partition("/")
    return unquote(rev), unquote(path)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _card_data(server: HubServer, repo_id: str, repo_type: str, sha: str) -> dict | None:
    readme = server.hub.snapshot(repo_id, revision=sha, repo_type=repo_type) / "README.md"
    if not readme.exists():
        return None
    text = readme.read_text(errors="replace")
    if not text.startswith("---"):
        return None
    try:
        data = yaml.safe_load(text.split("---", 2)[1])
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


# ----- handlers -----------------------------------------------------------------------------------


def whoami(server: HubServer, request: Request, endpoint: str) -> Response:
    server.guard(request, endpoint)
    return JSONResponse({"type": "user", "name": "hubtune-test", "orgs": [], "auth": {}})


def create_repo(server: HubServer, request: Request, endpoint: str) -> Response:
    body = _json(request)
    name, org = body.get("name"), body.get("organization")
    repo_id = f"{org}/{name}" if org else str(name)
    server.guard(request, endpoint, repo_id)
    repo_type = body.get("type") or "model"
    if repo_type not in KINDS.values():
        raise HubHTTPError(400, f"unsupported repo type '{repo_type}'")
    try:
        validate_repo_id(repo_id)
    except InvalidRepoId as err:
        raise HubHTTPError(400, str(err)) from err
    private = body.get("visibility", "private" if body.get("private") else "public") != "public"
    url = _repo_url(request, repo_id, repo_type)
    if not server.hub.create_repo(repo_id, repo_type=repo_type, private=private):
        return JSONResponse({"error": "You already created this repo", "url": url}, status_code=409)
    # Like the Hub, a new repo starts with one commit holding .gitattributes.
    server.hub.commit(repo_id, files={".gitattributes": GITATTRIBUTES}, message="initial commit", repo_type=repo_type)
    return JSONResponse({"url": url, "name": repo_id, "id": repo_id})


def validate_yaml(server: HubServer, request: Request, endpoint: str) -> Response:
    server.guard(request, endpoint)
    content = _json(request).get("content", "")
    if content.startswith("---"):
        try:
            yaml.safe_load(content.split("---", 2)[1])
        except yaml.YAMLError as err:
            return JSONResponse({"errors": [{"message": str(err)}], "warnings": []}, status_code=400)
    return JSONResponse({"errors": [], "warnings": []})


def repo_info(server: HubServer, request: Request, endpoint: str) -> Response:
    repo_id, repo_type = _repo(server, request, endpoint)
    rev = request.path_params.get("rev", "main")
    sha = _resolve(server, repo_id, repo_type, rev)
    meta = server.hub.repo_info(repo_id, repo_type=repo_type)
    files = server.hub.tree(repo_id, revision=sha, repo_type=repo_type)
    last = next((c for c in reversed(server.hub.log(repo_id, repo_type=repo_type)) if c["sha"] == sha), None)
    info = {
        "_id": repo_id,
        "id": repo_id,
        "author": repo_id.split("/")[0] if "/" in repo_id else None,
        "sha": sha,
        "private": meta["private"],
        "disabled": False,
        "gated": False,
        "createdAt": _iso(meta["created_at"]),
        "lastModified": _iso(last["time"] if last else meta["created_at"]),
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": [{"rfilename": p, "size": f["size"], "blobId": f["oid"]} for p, f in sorted(files.items())],
    }
    card = _card_data(server, repo_id, repo_type, sha)
    if card is not None:
        info["cardData"] = card
        info["tags"] = [str(t) for t in card.get("tags") or []]
        if repo_type == "model":
            info["library_name"] = card.get("library_name")
            info["pipeline_tag"] = card.get("pipeline_tag")
    if repo_type == "model":
        info["modelId"] = repo_id
    return JSONResponse(info)


def _entries(files: dict, prefix: str, recursive: bool) -> list[dict]:
    """Files (and folders) under `prefix`, as the Hub's tree API lists them."""
    base = prefix.strip("/")
    start = f"{base}/" if base else ""
    out, folders = [], set()
    for path, f in sorted(files.items()):
        if not path.startswith(start):
            continue
        rel_parts = path[len(start):].split("/")
        for depth in range(1, len(rel_parts)):
            folder = start + "/".join(rel_parts[:depth])
            if (recursive or depth == 1) and folder not in folders:
                folders.add(folder)
                out.append({"type": "directory", "path": folder, "oid": "0" * 40, "size": 0})
        if recursive or len(rel_parts) == 1:
            out.append({"type": "file", "path": path, "size": f["size"], "oid": f["oid"]})
    return out


def tree(server: HubServer, request: Request, endpoint: str) -> Response:
    repo_id, repo_type = _repo(server, request, endpoint)
    rev, path = _raw_after(request, f"/api/{request.path_params['kind']}/{repo_id}/tree/")
    sha = _resolve(server, repo_id, repo_type, rev)
    files = server.hub.tree(repo_id, revision=sha, repo_type=repo_type)
    recursive = request.query_params.get("recursive", "false").lower() in ("1", "true")
    entries = _entries(files, path, recursive)
    if path and not entries:
        raise HubHTTPError(404, f"{path} does not exist at {rev}", "EntryNotFound", {"X-Repo-Commit": sha})
    return JSONResponse(entries)


def refs(server: HubServer, request: Request, endpoint: str) -> Response:
    repo_id, repo_type = _repo(server, request, endpoint)
    try:
        branches = server.hub.branches(repo_id, repo_type=repo_type)
    except RepoNotFound as err:
        raise HubHTTPError(404, "Repository not found", "RepoNotFound") from err
    items = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha} for b, sha in sorted(branches.items())]
    return JSONResponse({"branches": items, "tags": [], "converts": [], "pullRequests": []})


def paths_info(server: HubServer, request: Request, endpoint: str) -> Response:
    repo_id, repo_type = _repo(server, request, endpoint)
    sha = _resolve(server, repo_id, repo_type, request.path_params["rev"])
    form = _form(request)
    files = server.hub.tree(repo_id, revision=sha, repo_type=repo_type)
    wanted = [p.strip("/") for p in form.getlist("paths")]
    out = [{"type": "file", "path": p, "size": files[p]["size"], "oid": files[p]["oid"]} for p in wanted if p in files]
    folders = {p for p in wanted if p not in files and any(f.startswith(p + "/") for f in files)}
    out += [{"type": "directory", "path": p, "oid": "0" * 40, "size": 0} for p in sorted(folders)]
    return JSONResponse(out)


def preupload(server: HubServer, request: Request, endpoint: str) -> Response:
    repo_id, repo_type = _repo(server, request, endpoint)
    sha = _resolve(server, repo_id, repo_type, request.path_params["rev"])
    files = server.hub.tree(repo_id, revision=sha, repo_type=repo_type)
    answer = [
        # "regular": the client sends the bytes inline in the commit (no Xet/LFS upload); "oid" lets
        # it skip files that did not change, as with the real Hub.
        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": files.get(f["path"], {}).get("oid")}
        for f in _json(request).get("files", [])
    ]
    return JSONResponse({"files": answer, "commitOid": sha})


def _parse_commit(body: bytes) -> tuple[dict, dict[str, bytes], set[str]]:
    header, files, deletions = {}, {}, set()
    for line in body.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        key, value = item.get("key"), item.get("value", {})
        if key == "header":
            header = value
        elif key == "file":
            content = value.get("content", "")
            files[value["path"]] = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
        elif key in ("deletedFile", "deletedFolder"):
            deletions.add(value["path"])
        else:
            raise HubHTTPError(400, f"this test hub only accepts inline files, got a '{key}' line")
    if not header.get("summary"):
        raise HubHTTPError(400, "commit header with a summary is required")
    return header, files, deletions


def commit(server: HubServer, request: Request, endpoint: str) -> Response:
    repo_id, repo_type = _repo(server, request, endpoint)
    branch = request.path_params["rev"]
    if request.query_params.get("create_pr"):
        raise HubHTTPError(400, "pull requests are not supported by this test hub")
    _resolve(server, repo_id, repo_type, branch)  # the branch must exist, as on the Hub
    if branch not in server.hub.branches(repo_id, repo_type=repo_type):
        raise HubHTTPError(400, f"can only commit to a branch, not to '{branch}'")
    header, files, deletions = _parse_commit(_body(request))
    try:
        sha = server.hub.commit(
            repo_id, files=files, deletions=deletions, message=header["summary"], branch=branch,
            parent_commit=header.get("parentCommit"), repo_type=repo_type,
        )
    except HubConflict as err:
        raise HubHTTPError(412, "A commit has happened since. Please refresh and try again.") from err
    except InvalidRepoId as err:
        raise HubHTTPError(400, str(err)) from err
    url = f"{_repo_url(request, repo_id, repo_type)}/commit/{sha}"
    return JSONResponse({"success": True, "commitOid": sha, "commitUrl": url,
                         "commitMessage": header["summary"], "hookOutput": "", "pullRequestUrl": None})


def create_branch(server: HubServer, request: Request, endpoint: str) -> Response:
    repo_id, repo_type = _repo(server, request, endpoint)
    branch = request.path_params["branch"]
    start = _json(request).get("startingPoint") or "main"
    sha = _resolve(server, repo_id, repo_type, start)
    try:
        server.hub.create_branch(repo_id, branch=branch, revision=sha, repo_type=repo_type)
    except HubConflict as err:
        raise HubHTTPError(409, "Reference already exists") from err
    except InvalidRepoId as err:
        raise HubHTTPError(400, str(err)) from err
    return JSONResponse({})


def download(server: HubServer, request: Request, endpoint: str) -> Response:
    repo, repo_type = request.path_params["repo"], "model"
    if repo.startswith("datasets/"):
        repo, repo_type = repo[len("datasets/"):], "dataset"
    server.guard(request, endpoint, repo)
    try:
        validate_repo_id(repo)
    except InvalidRepoId as err:
        raise HubHTTPError(404, "Repository not found", "RepoNotFound") from err
    prefix = f"/{'datasets/' if repo_type == 'dataset' else ''}{repo}/resolve/"
    rev, path = _raw_after(request, prefix)
    sha = _resolve(server, repo, repo_type, rev)
    entry = server.hub.tree(repo, revision=sha, repo_type=repo_type).get(path)
    if entry is None:
        raise HubHTTPError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
    headers = {
        "X-Repo-Commit": sha,
        "ETag": f'"{entry["oid"]}"',
        "Content-Length": str(entry["size"]),
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
    }
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers)
    file = server.hub.snapshot(repo, revision=sha, repo_type=repo_type) / path
    return _file_response(file, entry["size"], headers, request.headers.get("range"))


def _file_response(file: pathlib.Path, size: int, headers: dict, range_header: str | None) -> Response:
    start = 0
    if range_header and range_header.startswith("bytes=") and range_header[6:].split("-")[0].isdigit():
        start = min(int(range_header[6:].split("-")[0]), size)  # "bytes=N-": resume an interrupted download
        headers = {**headers, "Content-Length": str(size - start), "Content-Range": f"bytes {start}-{size - 1}/{size}"}

    def chunks():
        with open(file, "rb") as f:
            f.seek(start)
            while chunk := f.read(1 << 20):
                yield chunk

    return StreamingResponse(chunks(), status_code=206 if start else 200, headers=headers)


def _body(request: Request) -> bytes:
    return request.scope["hubtest.body"]


def _json(request: Request) -> dict:
    body = _body(request)
    return json.loads(body) if body.strip() else {}


def _form(request: Request) -> FormData:
    return FormData(parse_qsl(_body(request).decode(), keep_blank_values=True))
