"""How fast the dashboard's jobs page is served with 10,000 jobs in the database.

Fills a fresh PostgreSQL database and a fresh SQLite file with 10,000 jobs (20 owners, 5 models, every
status; 10 events each, metrics with step/total_steps as the workers write them), starts a real
`hubtune server` process on 127.0.0.1 for each, and times over keep-alive HTTP:
  - the page itself (GET /),
  - its API call, GET /v1/fine_tuning/jobs?limit=20, unfiltered and with each filter, and a deep page,
  - a whole table refresh as the page's script does it: the list plus the events call for each live job.
Prints p50 and p99 in milliseconds.

    python bench/jobs_page.py [--jobs 10000] [--requests 200] [--only postgres|sqlite]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import insert
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hubtune.db import engine_for  # noqa: E402
from hubtune.ids import _encode  # noqa: E402
from hubtune.keys import create_key  # noqa: E402
from hubtune.migrate import upgrade  # noqa: E402
from hubtune.models import Job, JobEvent  # noqa: E402
from testkit.services import free_port, postgres_database  # noqa: E402
from testkit.stack import hubtune_cmd  # noqa: E402

OWNERS = [f"team-{i}" for i in range(20)]
MODELS = ["sentence-transformers/all-MiniLM-L6-v2", "tiny/bert", "tiny/llama", "HuggingFaceTB/SmolLM2-135M", "org/m"]
STATUSES = ["succeeded"] * 80 + ["failed"] * 8 + ["cancelled"] * 6 + ["queued"] * 4 + ["running", "paused"]
EVENTS_PER_JOB = 10


def fill(url: str, *, jobs: int, seed: int = 0) -> dict[str, str]:
    """Insert the jobs and their events; returns {"admin": key, "user": key, "model": m, "middle": job id}."""
    rng = random.Random(seed)
    start = time.time() - 30 * 86400
    job_rows, event_rows, ids = [], [], []
    for i in range(jobs):
        created = start + i * (30 * 86400 / jobs)
        job_id = f"ftjob-{_encode(int(created * 1000), 10)}{_encode(rng.getrandbits(70), 14)}"
        ids.append(job_id)
        status = rng.choice(STATUSES)
        done = status in ("succeeded", "failed", "cancelled")
        job_rows.append(dict(
            id=job_id, owner=rng.choice(OWNERS), status=status, stage="training" if status == "running" else None,
            model=rng.choice(MODELS), training_file="file-bench", seed=i, queue="train",
            spec={"task": "sequence_classification", "tuning": {"type": "lora", "r": 8},
                  "training": {"max_steps": 100}},
            data_report={"examples": 1000, "tokens": 50000}, attempts=1, max_attempts=3, lease_token=1,
            created_at=created, updated_at=created, started_at=created + 5,
            finished_at=created + 600 if done else None,
        ))
        for step in range(1, EVENTS_PER_JOB + 1):
            event_rows.append(dict(job_id=job_id, created_at=created + 5 + step, level="info", type="metrics",
                                   message=f"Step {step * 10}/100",
                                   data={"step": step * 10, "total_steps": 100, "train_loss": 1.0 / step}))
    engine = engine_for(url)
    with Session(engine) as s:
        for lo in range(0, len(job_rows), 2000):
            s.execute(insert(Job), job_rows[lo:lo + 2000])
        for lo in range(0, len(event_rows), 5000):
            s.execute(insert(JobEvent), event_rows[lo:lo + 5000])
        admin = create_key(s, owner="admin", admin=True)
        user = create_key(s, owner=OWNERS[3])
        s.commit()
    if url.startswith("postgresql"):
        with engine.connect() as c:
            c.exec_driver_sql("ANALYZE")
    return {"admin": admin, "user": user, "model": MODELS[2], "middle": sorted(ids)[jobs // 2]}


def serve(url: str, data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HUBTUNE_DATABASE_URL": url, "HUBTUNE_DATA_DIR": str(data_dir)}
    log = open(data_dir / "server.log", "w")
    proc = subprocess.Popen(hubtune_cmd("server", "--port", str(port), "--no-migrate"), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start:\n{(data_dir / 'server.log').read_text()}")


def timed(fn, n: int) -> tuple[float, float]:
    for _ in range(10):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.99 * len(samples)))]


def get(client: httpx.Client, path: str, **params) -> dict | str:
    r = client.get(path, params=params)
    r.raise_for_status()
    return r.json() if "json" in r.headers.get("content-type", "") else r.text


def table_refresh(client: httpx.Client, **params) -> None:
    """What the page's script does every 2 s: one list call, then the events of each live job on it."""
    page = get(client, "/v1/fine_tuning/jobs", limit=20, **params)
    for job in page["data"]:
        if job["status"] in ("queued", "running", "paused"):
            get(client, f"/v1/fine_tuning/jobs/{job['id']}/events", limit=30)


def run(name: str, url: str, *, jobs: int, requests: int) -> None:
    t0 = time.perf_counter()
    info = fill(url, jobs=jobs)
    filled = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = serve(url, Path(tmp))
        try:
            admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {info['admin']}"}, timeout=30)
            user = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {info['user']}"}, timeout=30)
            cases = [
                ("GET / (the page)", lambda: get(admin, "/")),
                ("jobs API, admin, no filter", lambda: get(admin, "/v1/fine_tuning/jobs", limit=20)),
                ("jobs API, user's own", lambda: get(user, "/v1/fine_tuning/jobs", limit=20)),
                ("jobs API, status=running", lambda: get(admin, "/v1/fine_tuning/jobs", limit=20, status="running")),
                ("jobs API, owner=team-7", lambda: get(admin, "/v1/fine_tuning/jobs", limit=20, owner="team-7")),
                ("jobs API, model filter", lambda: get(admin, "/v1/fine_tuning/jobs", limit=20, model=info["model"])),
                ("jobs API, owner+status+model", lambda: get(admin, "/v1/fine_tuning/jobs", limit=20, owner="team-7",
                                                              status="succeeded", model=info["model"])),
                ("jobs API, a page from the middle", lambda: get(admin, "/v1/fine_tuning/jobs", limit=20,
                                                            after=info["middle"])),
                ("table refresh: list + each live job's events, in turn", lambda: table_refresh(admin, status="running")),
            ]
            print(f"\n{name}: {jobs:,} jobs, {jobs * EVENTS_PER_JOB:,} events (filled in {filled:.1f} s); "
                  f"{requests} requests each, loopback HTTP keep-alive")
            print(f"  {'request':44s} {'p50 ms':>8s} {'p99 ms':>8s}")
            for label, fn in cases:
                p50, p99 = timed(fn, requests)
                print(f"  {label:44s} {p50:8.2f} {p99:8.2f}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--only", choices=["postgres", "sqlite"])
    args = parser.parse_args()
    if args.only != "sqlite":
        with postgres_database("hubtune_dash") as url:
            run("PostgreSQL", url, jobs=args.jobs, requests=args.requests)
    if args.only != "postgres":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            upgrade(url)
            run("SQLite", url, jobs=args.jobs, requests=args.requests)


if __name__ == "__main__":
    main()
