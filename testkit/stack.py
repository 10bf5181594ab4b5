"""Real hubtune processes for end-to-end tests: a server and a Celery worker, started with their own
environment, their logs kept for the failure report, and stopped at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from cli.embedded import worker_layout
from testkit.services import free_port

TERMINAL = {"succeeded", "failed", "cancelled"}


# compose.yaml's workers, as `hubtune up` starts them: prepare/publish reused; a fresh process per training.
COMPOSE_WORKERS = {name: tuple(args) for name, args in worker_layout().items()}


def hubtune_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


class Stack:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HUBTUNE_DATA_DIR": str(root / "data"), **env}
        self.env.pop("HF_ENDPOINT", None)
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def run(self, *args: str) -> str:
        out = subprocess.run(hubtune_cmd(*args), env=self.env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"hubtune {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start `hubtune *args` as `name`, in a process group of its own: a fault test can kill or
        freeze the whole worker (with its Celery pool children) at once, and stop() leaves none behind."""
        with open(self.root / f"{name}.log", "a") as log:
            proc = subprocess.Popen(hubtune_cmd(*args), env={**self.env, **(env or {})}, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def start(self, *, worker_queues: str = "prepare,train,publish",
              workers: dict[str, tuple[str, ...]] | None = None) -> Stack:
        """Migrate, then start the server and one worker for `worker_queues`, or the named `workers`."""
        self.run("db", "upgrade")
        for name, args in (workers or {"worker": ("--queues", worker_queues)}).items():
            self.spawn(name, "worker", *args, "--loglevel", "INFO")
        self.spawn("server", "server", "--port", str(self.port), "--no-migrate")
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError(f"server did not start:\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        # Its processes' logs, and those of the workers `hubtune up` started (in the data dir's logs/).
        for path in sorted(self.root.glob("*.log")) + sorted(self.root.glob("data/logs/*.log")):
            parts.append(f"--- {path.name} ---\n" + path.read_text()[-6000:])
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM each process (as systemd would), then SIGKILL whatever is left of its group."""
        stop_processes([proc for _, proc in reversed(self.procs)])
        self.procs.clear()

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def stop_processes(procs: list[subprocess.Popen], *, timeout: float = 30) -> None:
    """Stop processes started with start_new_session=True, and every process of their groups: SIGTERM
    to each leader, up to `timeout` for them to exit, then SIGKILL to each whole group."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        kill_group(proc.pid)
        proc.wait()


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGCONT)  # a frozen process cannot die of SIGKILL's siblings
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def process_stat(pid: int) -> dict[str, Any] | None:
    """State, parent, process group and session of a process, from /proc; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces
    except (OSError, IndexError):
        return None
    return {"state": fields[0], "ppid": int(fields[1]), "pgid": int(fields[2]), "sid": int(fields[3])}


def live_pids() -> list[int]:
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]


def group_members(pgid: int) -> list[int]:
    """The processes (zombies left out) still in process group `pgid`."""
    return [pid for pid in live_pids()
            if (st := process_stat(pid)) and st["pgid"] == pgid and st["state"] != "Z"]


def upload(client: httpx.Client, path: Path) -> str:
    response = client.post("/files", data={"purpose": "fine-tune"}, files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def wait_for(client: httpx.Client, job_id: str, *, statuses=TERMINAL, timeout: float = 600,
             stack: Stack | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/fine_tuning/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s\n{stack.logs() if stack else ''}")


def all_events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """Every event of a job, oldest first, walking the newest-first pages."""
    events, after = [], None
    while True:
        params = {"limit": 100, **({"after": after} if after else {})}
        page = client.get(f"/fine_tuning/jobs/{job_id}/events", params=params).json()
        events.extend(page["data"])
        if not page["has_more"]:
            return list(reversed(events))
        after = page["data"][-1]["id"]


def local_worker_env(tmp_path, monkeypatch):
    """(data dir, database URL, LocalHub): a migrated SQLite database and process settings pointing at
    it, with the local hub backend, so that the worker's own functions (run_prepare, run_train, ...)
    run in this process. Clear get_settings and get_celery after the test."""
    from hubtune.migrate import upgrade
    from hubtune.queue import get_celery
    from hubtune.settings import get_settings
    from plugin import LocalHub

    data = tmp_path / "data"
    url = f"sqlite:///{tmp_path / 'hubtune.db'}"
    upgrade(url)
    for name, value in {"DATA_DIR": str(data), "DATABASE_URL": url, "HUB_BACKEND": "local"}.items():
        monkeypatch.setenv(f"HUBTUNE_{name}", value)
    get_settings.cache_clear()
    get_celery.cache_clear()  # prepare rings train through the process's Celery app: this test's queue folder
    return data, url, LocalHub(get_settings().resolved_hub_dir)
