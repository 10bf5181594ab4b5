"""Helpers shared by the API server tests (kept out of conftest.py so test modules can import them)."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from hubtune.db import engine_for
from hubtune.keys import create_key
from hubtune.settings import Settings
from server.app import create_app


# --- the app ----------------------------------------------------------------------------------------


@dataclass
class Env:
    """One app on one database, with helpers to make keys and read the doorbells it published."""

    settings: Settings
    app: FastAPI
    client: TestClient
    url: str

    def session(self) -> Session:
        return Session(engine_for(self.url), expire_on_commit=False)

    def key(self, owner: str | None = None, *, admin: bool = False) -> str:
        with self.session() as s:
            key = create_key(s, owner=owner or f"owner-{secrets.token_hex(4)}", admin=admin)
            s.commit()
        return key

    def doorbells(self) -> list[tuple[str, list, str]]:
        """(task name, args, queue) of every message the app put on its file-system queue."""
        folder = self.settings.queue_dir / "messages"
        out = []
        for path in sorted(folder.glob("*.msg")) if folder.exists() else []:
            out.append(decode_message(json.loads(path.read_bytes()), queue=path.name.split(".")[-2]))
        return out


def decode_message(payload: dict, *, queue: str = "") -> tuple[str, list, str]:
    body = payload["body"]
    if payload.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    return payload["headers"]["task"], args, queue


def make_env(url: str, data_dir: Path, *, broker_url: str = "filesystem://", **overrides) -> Env:
    # Most API tests name base models that no hub has: job creation does not ask the hub unless a test
    # turns the check on (tests/server/test_model_check.py).
    overrides.setdefault("model_check_seconds", 0)
    settings = Settings(data_dir=data_dir, database_url=url, broker_url=broker_url, **overrides)
    app = create_app(settings)
    # raise_server_exceptions: an unhandled error (a would-be 500) fails the test loudly.
    return Env(settings=settings, app=app, client=TestClient(app), url=url)


# --- helpers ----------------------------------------------------------------------------------------

TRAIN_JSONL = b"".join(
    json.dumps({"text": f"ticket {i}", "label": "billing" if i % 2 else "bug"}).encode() + b"\n" for i in range(8)
)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(client: TestClient, key: str, content: bytes = TRAIN_JSONL, *, name: str = "train.jsonl") -> dict:
    r = client.post("/v1/files", headers=auth(key), files={"file": (name, content)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return r.json()


def create_job(client: TestClient, key: str, file_id: str, **extra) -> dict:
    body = {"model": "sentence-transformers/all-MiniLM-L6-v2", "training_file": file_id, **extra}
    r = client.post("/v1/fine_tuning/jobs", headers=auth(key), json=body)
    assert r.status_code == 200, r.text
    return r.json()


def assert_error(response, status: int, *, param: str | None = "<any>", code: str | None = "<any>") -> dict:
    """The OpenAI error shape, with the expected status, param and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] in ("invalid_request_error", "server_error"), error
    if param != "<any>":
        assert error["param"] == param, error
    if code != "<any>":
        assert error["code"] == code, error
    return error




@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a background thread; yields its base URL."""
    import uvicorn

    from testkit.services import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
