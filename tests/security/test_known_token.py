"""A known hub token, stored as an owner's credential, is used for real (a job trains from and publishes to
a token-checking hub) and then appears nowhere: not in the PostgreSQL database (every table, via
pg_dump), the server and worker logs, the job events, the API answers (including error answers), the
files under the data folder, nor any command that went through the Redis broker (captured with
MONITOR for the whole run), so not in any task's arguments either.

Real processes: `hubtune server` and `hubtune worker` on PostgreSQL and a Redis, the unmodified
huggingface_hub client against the hub-compatible test server. Neither process is given the token.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
import redis

from hubtune.keys import hash_key
from testkit.tiny_models import make_tiny_bert, write_classification_jsonl
from testkit.hubserver import HubServer
from testkit.services import REDIS_HOST, REDIS_PORT, postgres_database, redis_url
from testkit.stack import Stack, all_events, upload, wait_for

pytestmark = pytest.mark.e2e
TOKEN = "hf_known" + secrets.token_hex(12)
DB = 11  # a Redis database of its own (tests/e2e uses 12 and 13, tests/server 14)


def spellings(secret: str) -> list[str]:
    """The token as it could appear: as is, and base64-encoded at each of the three byte alignments
    (Celery message bodies are base64), standard and URL-safe."""
    raw = secret.encode()
    out = [secret]
    for pad in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(b"\0" * pad + raw).decode()
            # Keep the characters whose 6 bits all come from the token (not from the bytes around it).
            out.append(text[-(-8 * pad // 6) : 8 * (pad + len(raw)) // 6])
    return out


def assert_absent(where: str, text: str) -> None:
    for spelling in spellings(TOKEN):
        assert spelling not in text, f"the hub token appears in {where} (as {spelling!r})"


def test_spellings_find_the_token_inside_base64():
    for before in (b"", b"a", b"ab", b'{"token": "'):
        for after in (b"", b"}", b'"}'):
            for enc in (base64.b64encode, base64.urlsafe_b64encode):
                blob = enc(before + TOKEN.encode() + after).decode()
                with pytest.raises(AssertionError):
                    assert_absent("a test blob", f"xx{blob}yy")


class Monitor:
    """Every command the Redis server receives, recorded from a MONITOR connection in a thread."""

    def __init__(self) -> None:
        self.client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=None)  # may sit idle
        self.commands: list[str] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "MONITOR did not start"

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            self.ready.set()
            try:
                for command in monitor.listen():
                    self.commands.append(command["command"])
            except (redis.ConnectionError, ValueError, AttributeError):
                pass

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("known-token")
    broker = redis_url(DB)
    monitor = Monitor()
    with postgres_database("hubtune_token") as db_url, HubServer(root / "hub-server", token=TOKEN) as hub:
        hub.hub.publish("tiny/bert", folder=make_tiny_bert(root / "tiny-bert"), message="import", private=False)
        stack = Stack(root, {
            "HUBTUNE_DATABASE_URL": db_url, "HUBTUNE_BROKER_URL": broker, "HUBTUNE_HUB_BACKEND": "hf",
            "HUBTUNE_HUB_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HUBTUNE_HEARTBEAT_SECONDS": "1",
            "HUBTUNE_HUB_PUBLISH_ATTEMPTS": "1",
        })
        stack.env.pop("HUBTUNE_HUB_TOKEN", None)
        answers: list[str] = []
        try:
            stack.start()
            key = stack.run("keys", "create", "--name", "alice").strip()
            yield {"stack": stack, "hub": hub, "key": key, "root": root, "db_url": db_url, "answers": answers,
                   "monitor": monitor}
        finally:
            stack.stop()
            monitor.close()
            redis.Redis.from_url(broker).flushdb()


def _client(run) -> httpx.Client:
    answers = run["answers"]

    def keep(response: httpx.Response) -> None:
        response.read()
        answers.append(f"{response.request.method} {response.request.url} -> {response.status_code}\n"
                       f"{response.headers}\n{response.text}")

    client = run["stack"].client(run["key"])
    client.event_hooks["response"] = [keep]
    return client


def test_the_token_is_used_and_then_found_nowhere(run):
    stack, hub = run["stack"], run["hub"]
    client = _client(run)

    # The credential: write-only, and a bad request that carries it does not echo it.
    created = client.post("/hub/credentials", json={"name": "mine", "token": TOKEN})
    assert created.status_code == 200, created.text
    assert client.post("/hub/credentials", json={"name": "x", "token": TOKEN, "extra": 1}).status_code == 400
    assert client.post("/hub/credentials", json={"name": ["x"], "token": TOKEN}).status_code == 400

    train = upload(client, write_classification_jsonl(run["root"] / "train.jsonl", n=24, seed=1))
    base = {"model": "tiny/bert", "training_file": train, "task": "sequence_classification", "seed": 1,
            "training": {"learning_rate": 0.01, "max_seq_length": 32}, "hyperparameters": {"n_epochs": 1, "batch_size": 8}}
    # The server talks to the hub with the credential too: a model the hub does not have is a clear 4xx.
    missing = client.post("/fine_tuning/jobs/estimate", json={**base, "model": "tiny/missing"})
    assert 400 <= missing.status_code < 500, missing.text

    ok = client.post("/fine_tuning/jobs", json={**base, "hub": {"repo_id": "alice/tuned"}}).json()
    hub.forbid("alice/locked")
    locked = client.post("/fine_tuning/jobs", json={**base, "hub": {"repo_id": "alice/locked"}}).json()
    # Job creation asks the hub with the credential too: the same clear 4xx, and no job.
    gone = client.post("/fine_tuning/jobs", json={**base, "model": "tiny/missing"})
    assert gone.status_code == 400 and gone.json()["error"]["code"] == "model_not_found", gone.text

    ok = wait_for(client, ok["id"], stack=stack)
    assert ok["status"] == "succeeded", (ok["error"], stack.logs())
    assert ok["fine_tuned_model"].startswith("alice/tuned@")  # published through the token-checking hub
    locked = wait_for(client, locked["id"], stack=stack)
    assert locked["status"] == "failed" and locked["error"]["code"] == "hub_auth_error", locked["error"]
    assert any(call[1] != "whoami" for call in hub.calls)

    events = [all_events(client, job["id"]) for job in (ok, locked)]
    for job in (ok, locked):
        client.get(f"/fine_tuning/jobs/{job['id']}")
    client.get("/hub/credentials")
    stack.stop()  # flush and close the logs before reading them

    assert_absent("the job events", json.dumps(events))
    assert_absent("the API answers", "\n".join(run["answers"]))
    _assert_not_in_database(run)
    for log in sorted(run["root"].glob("*.log")):
        assert_absent(f"the log {log.name}", log.read_text(errors="replace"))
    _assert_not_in_files(run["root"] / "data")
    _assert_not_in_broker(run["monitor"].commands, [ok["id"], locked["id"]])


def _assert_not_in_database(run) -> None:
    dsn = run["db_url"].replace("postgresql+psycopg://", "postgresql://")
    dump = subprocess.run(["pg_dump", "--data-only", "--no-owner", dsn], capture_output=True, text=True,
                          check=True).stdout
    assert "hub_credentials" in dump and "alice/tuned" in dump  # the dump holds the rows searched
    assert_absent("the database", dump)
    # API keys are stored as their SHA-256 only.
    assert run["key"] not in dump and hash_key(run["key"]) in dump


def _assert_not_in_files(data_dir: Path) -> None:
    searched = 0
    for path in data_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 50 << 20:
            assert_absent(f"the file {path}", path.read_bytes().decode("latin-1"))
            searched += 1
    assert searched > 0


def _assert_not_in_broker(commands: list[str], job_ids: list[str]) -> None:
    pushed = [c for c in commands if c.startswith("LPUSH")]
    assert len(pushed) >= len(job_ids), commands[:20]  # at least every job's prepare doorbell
    traffic = "\n".join(commands)
    assert all(job_id in traffic for job_id in job_ids)  # the capture saw the doorbells (argsrepr)
    assert_absent("the broker traffic", traffic)
    # Each task's arguments are exactly one job id.
    for command in pushed:
        encoded = re.search(r'"body": "([A-Za-z0-9+/=]+)"', command)
        assert encoded, command[:300]
        body = base64.b64decode(encoded.group(1)).decode()
        args, kwargs, _embed = json.loads(body)
        assert kwargs == {} and len(args) == 1 and args[0] in job_ids, (args, kwargs)
        assert_absent("a task message", body)
