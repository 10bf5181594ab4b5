"""Fault injection for the reliability tests and bench/faults.py: a PostgreSQL cluster and a Redis of
the lab's own on spare loopback ports (so they can be restarted without touching anyone else's), real
`hubtune server` / `hubtune worker` processes, and the faults themselves (SIGKILL, SIGSTOP, restarts).

Each scenario function injects one fault into a running lab and returns what it measured: whether the
job(s) ended as they should (lost), whether any job trained twice at the same time (twice), and the
seconds from the fault to the recovery (recover_s). The tests assert on them; the bench repeats them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from testkit.tiny_models import make_tiny_bert, write_classification_jsonl
from testkit.services import free_port
from testkit.stack import Stack, upload

PG_BIN = next((d for d in ("/usr/local/bin", "/usr/lib/postgresql/15/bin") if Path(d, "initdb").exists()),
              "/usr/lib/postgresql/15/bin")
# Quick settings: a lease lost in seconds, swept every second, doorbells re-rung after 3 s.
FAST = {
    "HUBTUNE_LEASE_SECONDS": "5", "HUBTUNE_HEARTBEAT_SECONDS": "1", "HUBTUNE_SWEEP_INTERVAL_SECONDS": "1",
    "HUBTUNE_REQUEUE_AFTER_SECONDS": "3", "HUBTUNE_MAX_ATTEMPTS": "3",
}
TRAIN_STARTED = "Fine-tuning job started on "
TRAINING_FINISHED = "Training finished"


def _wait(predicate, timeout: float, what: str, *, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class PrivateRedis:
    """A redis-server of our own, without persistence: a restart starts it empty (doorbells lost)."""

    def __init__(self, root: Path) -> None:
        self.port, self.root, self.proc = free_port(), root, None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> PrivateRedis:
        log = open(self.root / "redis.log", "a")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=log, stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        _wait(up, 20, "redis-server to start")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.kill()
        self.start()


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temp folder owned by the postgres OS user, since we
    run as root), listening on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="hubtune-pg-", dir="/tmp"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self._as_postgres(f"{PG_BIN}/initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                          "--no-sync", "-E", "UTF8")

    def _as_postgres(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        out = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{cmd[0]} failed:\n{out.stdout}\n{out.stderr}"

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"),
                          "-w", "-t", "60", action, *extra)

    def start(self) -> PrivatePostgres:
        self._pg_ctl("start")
        return self

    def restart(self) -> None:
        # fast: every open connection is cut, as when PostgreSQL is restarted or fails over.
        self._pg_ctl("restart", "-m", "fast")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Outcome:
    """What one injected fault did: jobs lost, jobs that trained twice at once, seconds to recover."""

    fault: str
    lost: int = 0
    twice: int = 0
    recover_s: float | None = None
    jobs: list[str] = field(default_factory=list)
    requeued: int = 0  # claims beyond the first, over all the jobs (a recovered worker loss counts one)


class Lab:
    """A private PostgreSQL + Redis + `hubtune server` (with its sweeper), and workers started on demand,
    each in its own process group."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, *, closers: tuple = ()) -> None:
        self.root = root
        self.closers = closers  # what else the lab started (an object store, a hub), stopped by close()
        self.pg = PrivatePostgres().start()
        self.redis = PrivateRedis(root).start()
        self.db_url = self.pg.create_database("hubtune")
        self.stack = Stack(root, {"HUBTUNE_DATABASE_URL": self.db_url, "HUBTUNE_BROKER_URL": self.redis.url(0),
                                  **FAST, **(env or {})})
        self.engine = create_engine(self.db_url, pool_pre_ping=True)
        self.workers: dict[str, subprocess.Popen] = {}
        self.keys: dict[str, str] = {}
        self.n = 0

    # --- set-up ------------------------------------------------------------------------------------

    def start(self) -> Lab:
        self.stack.run("db", "upgrade")
        self.stack.run("hub", "import", str(make_tiny_bert(self.root / "tiny-bert")), "tiny/bert")
        self.start_server()
        for who in ("alice", "bob"):
            self.keys[who] = self.stack.run("keys", "create", "--name", who).strip()
        self.train_file = {w: upload(self.client(w), write_classification_jsonl(self.root / f"{w}.jsonl", n=64, seed=1))
                           for w in self.keys}
        return self

    def start_server(self) -> None:
        self.server = self.stack.spawn("server", "server", "--port", str(self.stack.port), "--no-migrate")
        self.stack.wait_healthy(timeout=90)

    def kill_server(self) -> None:
        self.server.kill()
        self.server.wait()

    def worker(self, name: str, *, queues: str = "prepare,train,publish", concurrency: int = 1,
               env: dict[str, str] | None = None) -> str:
        self.workers[name] = self.stack.spawn(name, "worker", "--queues", queues, "--concurrency",
                                              str(concurrency), "--loglevel", "INFO", env=env)
        return name

    def signal_worker(self, name: str, sig: int) -> None:
        os.killpg(self.workers[name].pid, sig)
        if sig == signal.SIGKILL:
            self.workers[name].wait()

    def stop_workers(self) -> None:
        for name, proc in list(self.workers.items()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)  # a frozen worker cannot die of SIGKILL's siblings
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.workers.clear()

    def close(self) -> None:
        try:
            self.stop_workers()
            self.stack.stop()
        finally:
            self.engine.dispose()
            self.redis.kill()
            self.pg.close()
            for close in self.closers:
                close()

    # --- jobs ----------------------------------------------------------------------------------------

    def client(self, who: str = "alice") -> httpx.Client:
        return self.stack.client(self.keys[who])

    def create_job(self, who: str = "alice", *, max_steps: int = 60, save_steps: int = 10) -> str:
        self.n += 1
        with self.client(who) as client:
            response = client.post("/fine_tuning/jobs", json={
                "model": "tiny/bert", "training_file": self.train_file[who], "seed": self.n,
                "task": "sequence_classification", "hyperparameters": {"batch_size": 4},
                "training": {"max_steps": max_steps, "save_steps": save_steps, "max_seq_length": 32},
            })
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def sql(self, query: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            result = conn.execute(text(query), params)
            return list(result) if result.returns_rows else []

    def job(self, job_id: str):
        return self.sql("SELECT * FROM jobs WHERE id = :id", id=job_id)[0]

    def events(self, job_id: str) -> list[Any]:
        return self.sql("SELECT message, type, data, created_at FROM job_events WHERE job_id = :id ORDER BY id",
                        id=job_id)

    def steps(self, job_id: str) -> list[int]:
        return [e.data["step"] for e in self.events(job_id) if e.type == "metrics" and "train_loss" in (e.data or {})]

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 300) -> Any:
        try:
            return _wait(lambda: (j := self.job(job_id)).status in statuses and j, timeout, f"{job_id} in {statuses}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; job is {self.job(job_id).status}\n{self.stack.logs()}") from None

    def wait_trained_past_checkpoint(self, job_id: str, timeout: float = 180) -> int:
        """Wait until the job has a recorded checkpoint and trained a few steps past it; its step.

        Metrics events are written in batches (once a second, and before each checkpoint), so the steps
        seen past the newest checkpoint can lag: a second checkpoint also shows the run went past the first."""
        def past() -> int | None:
            rows = self.sql("SELECT max(step) AS step, count(*) AS n FROM checkpoints WHERE job_id = :id", id=job_id)
            step, n = rows[0].step, rows[0].n
            if not step or self.job(job_id).status != "running":
                return None
            return step if n >= 2 or max(self.steps(job_id), default=0) >= step + 2 else None

        try:
            return _wait(past, timeout, f"{job_id} to train past a checkpoint")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; job is {self.job(job_id).status}\n{self.stack.logs()}") from None

    def holder(self, job_id: str) -> str:
        """The name of the worker whose process group holds the job's lease."""
        owner = _wait(lambda: self.job(job_id).lease_owner, 60, f"a lease on {job_id}")
        pid = int(owner.rsplit(":", 1)[1])
        for name, proc in self.workers.items():
            try:
                if os.getpgid(pid) == proc.pid:
                    return name
            except ProcessLookupError:
                break
        raise AssertionError(f"no worker of ours holds {job_id} ({owner})")

    def trained_twice(self, job_id: str) -> bool:
        """Two trainings at once leave traces: training finished more than once, or metrics of one
        training interleaved with another's (a step lower than the one before without a resume between)."""
        events = self.events(job_id)
        if sum(e.message.startswith(TRAINING_FINISHED) for e in events) > 1:
            return True
        last = 0
        for e in events:
            if e.message.startswith("Resuming from checkpoint-"):
                last = int(e.message.rsplit("-", 1)[1])
            elif e.message.startswith(TRAIN_STARTED):
                last = 0
            elif e.type == "metrics" and "train_loss" in (e.data or {}):
                if e.data["step"] <= last:
                    return True
                last = e.data["step"]
        return False

    def first_event_after(self, job_id: str, t: float, prefix: str = "", type: str | None = None) -> float:
        def find() -> float | None:
            for e in self.events(job_id):
                if e.created_at > t and e.message.startswith(prefix) and (type is None or e.type == type):
                    return e.created_at
            return None

        return _wait(find, 120, f"an event '{prefix}' of {job_id} after the fault")

    def outcome(self, fault: str, jobs: list[str], *, t0: float, recovered_at: float) -> Outcome:
        lost = sum(self.job(j).status != "succeeded" for j in jobs)
        return Outcome(fault, lost=lost, twice=sum(self.trained_twice(j) for j in jobs),
                       recover_s=round(recovered_at - t0, 1), jobs=jobs,
                       requeued=sum(max(self.job(j).attempts - 1, 0) for j in jobs))


# --- the faults ------------------------------------------------------------------------------------------


def sigkill_mid_training(lab: Lab) -> Outcome:
    """SIGKILL the worker holding a training job (its whole process group, as a machine dying); a standby
    worker resumes from the last checkpoint once the sweeper sees the expired lease."""
    lab.worker("w1"), lab.worker("w2")
    job_id = lab.create_job(max_steps=200, save_steps=10)
    lab.wait_trained_past_checkpoint(job_id)
    victim = lab.holder(job_id)
    lab.signal_worker(victim, signal.SIGKILL)
    t0 = time.time()
    resumed_at = lab.first_event_after(job_id, t0, "Resuming from checkpoint-")
    lab.worker(victim)  # the machine comes back
    lab.wait_status(job_id, {"succeeded", "failed"})
    return lab.outcome("worker SIGKILLed mid-training", [job_id], t0=t0, recovered_at=resumed_at)


def sigstop_past_lease(lab: Lab) -> Outcome:
    """Freeze the worker (SIGSTOP) until its lease expires and another worker takes the job over, then
    wake it (SIGCONT): its writes must be refused and it must stop."""
    lab.worker("w1"), lab.worker("w2")
    total = 200
    job_id = lab.create_job(max_steps=total, save_steps=10)
    lab.wait_trained_past_checkpoint(job_id)
    frozen = lab.holder(job_id)
    lab.signal_worker(frozen, signal.SIGSTOP)
    t0 = time.time()
    taken_at = lab.first_event_after(job_id, t0, "Resuming from checkpoint-")
    _wait(lambda: lab.job(job_id).lease_owner and lab.holder(job_id) != frozen, 60, "the takeover")
    before = max(lab.steps(job_id))
    # On a fast machine the new holder may already be at the last step.
    _wait(lambda: max(lab.steps(job_id)) >= min(before + 3, total), 60, "the new holder to train")
    lab.signal_worker(frozen, signal.SIGCONT)
    lab.wait_status(job_id, {"succeeded", "failed"})
    out = lab.outcome("worker frozen (SIGSTOP) past its lease, then woken", [job_id], t0=t0, recovered_at=taken_at)
    out.frozen = frozen  # type: ignore[attr-defined]
    return out


def keeps_dying(lab: Lab, *, attempts: int = 2) -> Outcome:
    """Every worker that claims the job dies: after `attempts` the job fails with worker_lost."""
    lab.worker("w1"), lab.worker("w2")
    job_id = lab.create_job(max_steps=400, save_steps=50)
    lab.sql("UPDATE jobs SET max_attempts = :n WHERE id = :id", n=attempts, id=job_id)
    t0 = time.time()
    for attempt in range(1, attempts + 1):
        _wait(lambda a=attempt: (j := lab.job(job_id)).attempts == a and j.status == "running" and j.lease_owner,
              180, f"attempt {attempt}")
        victim = lab.holder(job_id)
        lab.signal_worker(victim, signal.SIGKILL)
        t0 = time.time()
        if attempt < attempts:
            lab.worker(victim)
    job = lab.wait_status(job_id, {"failed", "succeeded"}, timeout=60)
    out = Outcome("worker dies on every attempt", lost=0 if job.status == "failed" else 1,
                  twice=int(lab.trained_twice(job_id)), recover_s=round(job.finished_at - t0, 1), jobs=[job_id],
                  requeued=job.attempts - 1)
    return out


def redis_restart_with_jobs_queued(lab: Lab, *, jobs: int = 3) -> Outcome:
    """Jobs wait in the queue (no train worker yet); Redis dies and comes back empty: every doorbell is
    gone. The sweeper rings them again; all jobs succeed."""
    lab.worker("cpu", queues="prepare,publish")
    ids = [lab.create_job(who, max_steps=6, save_steps=3) for who in ("alice", "bob", "alice")[:jobs]]
    for job_id in ids:
        lab.wait_status(job_id, {"queued"})
    lab.redis.restart()
    t0 = time.time()
    lab.worker("gpu", queues="train", concurrency=len(ids))  # a slot each: the claims are not queued behind training
    for job_id in ids:
        lab.wait_status(job_id, {"succeeded", "failed"})
    claimed = max(lab.first_event_after(j, t0, TRAIN_STARTED) for j in ids)
    return lab.outcome("Redis restarted empty with jobs queued", ids, t0=t0, recovered_at=claimed)


def postgres_restart_mid_job(lab: Lab) -> Outcome:
    """PostgreSQL restarts while a job trains: the worker's heartbeat and hooks ride it out, the server
    reconnects, the job goes on without losing its lease."""
    lab.worker("w1")
    job_id = lab.create_job(max_steps=150, save_steps=50)
    _wait(lambda: max(lab.steps(job_id), default=0) >= 5, 180, "training to start")
    t0 = time.time()
    lab.pg.restart()
    back = time.time()
    lab.engine.dispose()
    job = lab.job(job_id)
    assert (job.status, job.stage) == ("running", "training"), "the job finished before the fault; make it longer"
    # Recovered when the worker's lease heartbeat lands again (written at commit time; metrics events
    # carry the time they were reported, which may be before the outage).
    beat = _wait(lambda: (j := lab.job(job_id)).heartbeat_at and j.heartbeat_at > back and j.heartbeat_at, 60,
                 "a heartbeat after the restart")
    lab.wait_status(job_id, {"succeeded", "failed"})
    return lab.outcome("PostgreSQL restarted mid-job", [job_id], t0=t0, recovered_at=beat)


def server_restart_mid_job(lab: Lab) -> Outcome:
    """The server (and its sweeper) is killed while one job trains and another was just accepted; it
    comes back; nothing is lost."""
    lab.worker("w1")
    running = lab.create_job(max_steps=200, save_steps=50)
    _wait(lambda: max(lab.steps(running), default=0) >= 3, 180, "training to start")
    accepted = lab.create_job("bob", max_steps=6, save_steps=3)
    lab.kill_server()
    t0 = time.time()
    time.sleep(2)
    lab.start_server()
    healthy = time.time()
    for job_id in (running, accepted):
        lab.wait_status(job_id, {"succeeded", "failed"})
    return lab.outcome("server killed and restarted mid-job", [running, accepted], t0=t0, recovered_at=healthy)


def duplicate_train_message(lab: Lab, *, copies: int = 2) -> Outcome:
    """The train doorbell of a queued job is delivered `copies` more times (as after a redelivery): the
    job trains once."""
    from hubtune.queue import TRAIN, make_celery
    from hubtune.settings import Settings

    lab.worker("cpu", queues="prepare,publish")
    job_id = lab.create_job(max_steps=10, save_steps=5)
    job = lab.wait_status(job_id, {"queued"})
    app = make_celery(Settings(broker_url=lab.redis.url(0), database_url=lab.db_url, data_dir=lab.root / "data"))
    for _ in range(copies):
        app.send_task(TRAIN, args=[job_id], queue=job.queue)
    t0 = time.time()
    lab.worker("gpu", queues="train", concurrency=2)
    lab.wait_status(job_id, {"succeeded", "failed"})
    started = lab.first_event_after(job_id, t0, TRAIN_STARTED)
    out = lab.outcome(f"train message delivered {copies + 1} times", [job_id], t0=t0, recovered_at=started)
    starts = sum(e.message.startswith(TRAIN_STARTED) for e in lab.events(job_id))
    out.twice += int(starts > 1 or lab.job(job_id).attempts != 1)
    return out


def priority_and_owner_limit(lab: Lab) -> dict[str, Any]:
    """alice queues two jobs at high priority, bob one at priority 0; two training slots and
    max_running_jobs_per_owner=1: alice's best job and bob's run first, alice's second waits."""
    lab.worker("cpu", queues="prepare,publish")
    a_low = lab.create_job("alice", max_steps=20, save_steps=10)
    a_high = lab.create_job("alice", max_steps=20, save_steps=10)
    bob = lab.create_job("bob", max_steps=20, save_steps=10)
    for job_id in (a_low, a_high, bob):
        lab.wait_status(job_id, {"queued"})
    # Helper B's API accepts `priority`; the column is what claiming reads.
    lab.sql("UPDATE jobs SET priority = CASE id WHEN :lo THEN 5 WHEN :hi THEN 9 ELSE 0 END WHERE id IN (:lo, :hi, :b)",
            lo=a_low, hi=a_high, b=bob)
    lab.worker("gpu", queues="train", concurrency=2, env={"HUBTUNE_MAX_RUNNING_JOBS_PER_OWNER": "1"})
    jobs = {name: lab.wait_status(j, {"succeeded", "failed"}) for name, j in
            (("a_high", a_high), ("a_low", a_low), ("bob", bob))}
    return jobs
