"""Every hubtune process exits within a bounded time on SIGTERM, sent to it alone (`docker stop`,
`kill PID`) or to its whole process group (systemd's default KillMode=control-group, `kill -- -PGID`),
idle or with a training job running; `hubtune up` stops its workers before it exits. A training job
interrupted this way resumes from its last checkpoint on another worker."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from cli.embedded import WORKER_STOP_SECONDS
from testkit.tiny_models import make_tiny_bert, write_classification_jsonl
from testkit.faults import FAST
from testkit.services import redis_url
from testkit.stack import Stack, all_events, group_members, live_pids, process_stat, upload, wait_for
from worker.shutdown import EXIT_DEADLINE_SECONDS

pytestmark = pytest.mark.e2e

REDIS_DB = 9  # a database of its own (tests/worker 10, the others 11-14)
# worker/shutdown.py's deadline, plus the time to act on it on a loaded machine.
WORKER_BOUND = EXIT_DEADLINE_SECONDS + 10
# `hubtune up`: the server's own stop, then its workers' (SIGKILLed after WORKER_STOP_SECONDS).
UP_BOUND = WORKER_STOP_SECONDS + 20


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    stack = Stack(root, {"HUBTUNE_BROKER_URL": redis_url(REDIS_DB), "HUBTUNE_DATABASE_URL": "",
                         "HUBTUNE_HUB_BACKEND": "local", "HUBTUNE_HUB_DIR": "", **FAST})
    (root / "data").mkdir()
    try:
        stack.run("db", "upgrade")
        stack.run("hub", "import", str(make_tiny_bert(root / "tiny-bert")), "tiny/bert")
        stack.spawn("server", "server", "--port", str(stack.port), "--no-migrate")
        stack.wait_healthy(timeout=90)
        stack.key = stack.run("keys", "create", "--name", "alice").strip()
        with stack.client(stack.key) as client:
            stack.train_file = upload(client, write_classification_jsonl(root / "train.jsonl", n=64, seed=1))
        yield stack
    finally:
        stack.stop()


def send_sigterm(proc: subprocess.Popen, target: str, sig: int = signal.SIGTERM) -> None:
    if target == "group":
        os.killpg(proc.pid, sig)  # the process was started in a group of its own (Stack.spawn)
    else:
        os.kill(proc.pid, sig)


def assert_exits(proc: subprocess.Popen, bound: float, stack: Stack, *, survivors: list[int] = ()) -> float:
    """`proc` exits within `bound` seconds, leaving none of its group (nor of `survivors`) alive."""
    start = time.monotonic()
    try:
        proc.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {bound:.0f} s after the signal:\n{stack.logs()}") from None
    took = time.monotonic() - start
    deadline = time.monotonic() + 3  # a task process killed with its parent is reaped by PID 1 by now
    while time.monotonic() < deadline and (group_members(proc.pid) or _alive(survivors)):
        time.sleep(0.1)
    assert not group_members(proc.pid), f"left in its process group: {group_members(proc.pid)}\n{stack.logs()}"
    assert not _alive(survivors), f"left running: {_alive(survivors)}\n{stack.logs()}"
    return took


def _alive(pids) -> list[int]:
    return [pid for pid in pids if (st := process_stat(pid)) and st["state"] != "Z"]


def descendants(pid: int) -> list[int]:
    stats = {p: process_stat(p) for p in live_pids()}
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, st in stats.items() if st and st["ppid"] == parent]
        found += children
        frontier += children
    return found


def start_worker(lab: Stack, name: str) -> subprocess.Popen:
    proc = lab.spawn(name, "worker", "--queues", "prepare,train,publish", "--concurrency", "1",
                     "--max-tasks-per-child", "1", "--loglevel", "INFO")
    log = lab.root / f"{name}.log"
    deadline = time.monotonic() + 180
    while " ready." not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, f"worker did not start:\n{lab.logs()}"
        time.sleep(0.3)
    return proc


@pytest.mark.parametrize("target", ["process", "group"])
def test_idle_worker_exits_on_sigterm(lab, target):
    worker = start_worker(lab, f"idle-{target}")
    send_sigterm(worker, target)
    assert_exits(worker, WORKER_BOUND, lab)


@pytest.mark.parametrize("target", ["process", "group"])
def test_training_worker_exits_on_sigterm_and_the_job_resumes(lab, target):
    worker = start_worker(lab, f"busy-{target}")
    client = lab.client(lab.key)
    job_id = client.post("/fine_tuning/jobs", json={
        "model": "tiny/bert", "training_file": lab.train_file, "task": "sequence_classification",
        "hyperparameters": {"batch_size": 4},
        "training": {"max_steps": 20000, "save_steps": 10, "max_seq_length": 32},
    }).json()["id"]
    deadline = time.monotonic() + 240
    while not any(e["message"].startswith("Checkpoint saved") for e in all_events(client, job_id)):
        assert time.monotonic() < deadline, f"no checkpoint yet:\n{lab.logs()}"
        time.sleep(0.5)
    # Sent to the main process alone, Celery's warm shutdown would wait for the whole training; sent to
    # the group, it could wait forever on the pool's lock. Either way the worker is gone in time.
    send_sigterm(worker, target)
    assert_exits(worker, WORKER_BOUND, lab)
    # Not failed: its lease runs out (or has run out, and the sweeper re-queued it).
    assert client.get(f"/fine_tuning/jobs/{job_id}").json()["status"] in ("running", "queued")
    # Another worker takes the job over (the sweeper re-queues it) and resumes from its last checkpoint.
    again = start_worker(lab, f"again-{target}")
    try:
        deadline = time.monotonic() + 180
        while not any(e["message"].startswith("Resuming from checkpoint-") for e in all_events(client, job_id)):
            assert time.monotonic() < deadline, f"not resumed:\n{lab.logs()}"
            time.sleep(0.5)
        client.post(f"/fine_tuning/jobs/{job_id}/cancel")
        assert wait_for(client, job_id, timeout=120, stack=lab)["status"] == "cancelled"
    finally:
        send_sigterm(again, "group")
        assert_exits(again, WORKER_BOUND, lab)


@pytest.mark.parametrize("target", ["process", "group"])
def test_server_exits_on_sigterm(lab, target):
    other = Stack(lab.root / f"server-{target}", {k: v for k, v in lab.env.items() if k.startswith("HUBTUNE_")})
    server = other.spawn("server", "server", "--port", str(other.port), "--no-migrate", "--no-sweeper")
    other.wait_healthy(timeout=90)
    send_sigterm(server, target)
    assert_exits(server, 15, other)


def _embedded_env(root) -> dict[str, str]:
    return {"HUBTUNE_DATABASE_URL": "", "HUBTUNE_BROKER_URL": "", "HUBTUNE_HUB_BACKEND": "local",
            "HUBTUNE_HUB_DIR": "", "HUBTUNE_DATA_DIR": str(root / "data")}


@pytest.mark.parametrize(("target", "sig"), [("process", signal.SIGTERM), ("group", signal.SIGTERM),
                                             ("process", signal.SIGHUP)])
def test_hubtune_up_stops_its_workers_on_sigterm(tmp_path, target, sig):
    stack = Stack(tmp_path, _embedded_env(tmp_path))
    up = stack.spawn("up", "up", "--port", str(stack.port))
    try:
        stack.wait_healthy(timeout=300)
        key = (tmp_path / "data" / "admin.key").read_text().strip()
        deadline = time.monotonic() + 300  # two workers importing torch on a loaded machine
        with stack.client(key) as client:
            while len(workers := client.get("/workers").json()["data"]) < 2:
                assert time.monotonic() < deadline, f"workers did not register:\n{stack.logs()}"
                time.sleep(0.5)
        pids = [w["pid"] for w in workers]
        family = descendants(up.pid)  # the two workers and their task processes
        assert set(pids) <= set(family)
        send_sigterm(up, target, sig)
        took = assert_exits(up, UP_BOUND, stack, survivors=family)
        assert up.returncode == 0, stack.logs()
        print(f"hubtune up stopped in {took:.1f} s")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{stack.url}/healthz", timeout=2)  # nothing serves its port any more
    finally:
        stack.stop()
