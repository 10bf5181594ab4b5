"""Real hubtune deployments for the benchmarks: a private redis-server, a fresh PostgreSQL database,
the distributed stack (server + worker processes) and the embedded one (`hubtune up`)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from testkit.services import free_port, postgres_database
from testkit.stack import COMPOSE_WORKERS, Stack

# Benches measure the service, not the rate limiter (helper B's setting; 0 = off).
NO_LIMITS = {"HUBTUNE_RATE_LIMIT_PER_MINUTE": "0", "HUBTUNE_MAX_QUEUED_JOBS_PER_OWNER": "0",
             "HUBTUNE_MAX_RUNNING_JOBS_PER_OWNER": "0"}
EMBEDDED = {"HUBTUNE_DATABASE_URL": "", "HUBTUNE_BROKER_URL": "", "HUBTUNE_HUB_BACKEND": "local",
            "HUBTUNE_HUB_DIR": "", **NO_LIMITS}


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A throw-away redis-server on a free port (other people's tests share the default one)."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def distributed(root: Path, *, models: dict[str, Path] = {}, worker: bool = True) -> Iterator[tuple[Stack, str, str]]:
    """PostgreSQL + a private Redis + `hubtune server` (+ compose.yaml's two workers): (stack, admin key,
    database url)."""
    with private_redis() as broker, postgres_database("hubtune_bench") as db_url:
        stack = Stack(root, {"HUBTUNE_DATABASE_URL": db_url, "HUBTUNE_BROKER_URL": broker,
                             "HUBTUNE_HUB_BACKEND": "local", "HUBTUNE_HUB_DIR": "", **NO_LIMITS})
        for repo_id, path in models.items():
            stack.run("hub", "import", str(path), repo_id)
        if worker:
            stack.start(workers=COMPOSE_WORKERS)
        else:
            stack.run("db", "upgrade")
            stack.spawn("server", "server", "--port", str(stack.port), "--no-migrate")
            stack.wait_healthy()
        key = stack.run("keys", "create", "--name", "bench", "--admin").strip()
        try:
            yield stack, key, db_url
        finally:
            stack.stop()


@contextlib.contextmanager
def embedded(root: Path, *, models: dict[str, Path] = {}) -> Iterator[tuple[Stack, str, str]]:
    """`hubtune up` (SQLite, file-system queue, local hub, its two workers): (stack, admin key, database url)."""
    stack = Stack(root, EMBEDDED)
    for repo_id, path in models.items():
        stack.run("hub", "import", str(path), repo_id)
    stack.spawn("up", "up", "--port", str(stack.port))
    try:
        stack.wait_healthy(timeout=180)
        key = (root / "data" / "admin.key").read_text().strip()
        yield stack, key, f"sqlite:///{root / 'data' / 'hubtune.db'}"
    finally:
        stack.stop()


def create_job(client: httpx.Client, body: dict) -> str:
    response = client.post("/fine_tuning/jobs", json=body)
    if response.status_code != 200:
        raise SystemExit(f"creating the job failed: {response.status_code} {response.text}")
    return response.json()["id"]


def wait_status(client: httpx.Client, job_id: str, statuses: set[str], *, timeout: float = 600,
                poll: float = 0.05) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/fine_tuning/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(poll)
    raise SystemExit(f"job {job_id} still {job['status']} after {timeout} s")


def percentile(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]
