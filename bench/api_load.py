"""API throughput under load: requests per second and p50/p99 at concurrency 32, SQLite and PostgreSQL.

Fills a fresh database with 10,000 jobs and 100,000 events (bench/jobs_page.py's fill: 20 owners,
every status), starts one real `hubtune server` process (no worker: doorbells stay in the queue; the
rate limit off), and drives it from a loopback load generator in another process (httpx async,
keep-alive, 32 requests in flight) for a fixed number of requests per endpoint:
  - create job:   POST /v1/fine_tuning/jobs (validation, insert + event, the doorbell after commit)
  - list jobs:    GET /v1/fine_tuning/jobs?limit=20 (admin, no filter: the newest page of 10,000)
  - list events:  GET /v1/fine_tuning/jobs/{id}/events?limit=20 (a random job of the 10,000)
Latency is measured by the client per request, queueing in the server included.

    python bench/api_load.py [--requests 2000] [--concurrency 32] [--only postgres|sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stacks import NO_LIMITS, percentile, private_redis  # noqa: E402


async def drive(base: str, key: str, make_request, *, requests: int, concurrency: int) -> dict:
    """``make_request(client, i)`` awaited ``requests`` times, ``concurrency`` at once."""
    import httpx

    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=60) as client:
        for i in range(min(concurrency, 32)):  # warm the connections and the server's caches
            await make_request(client, i)

        async def user() -> None:
            nonlocal errors
            for i in counter:
                t0 = time.perf_counter()
                response = await make_request(client, i)
                latencies.append((time.perf_counter() - t0) * 1000)
                if response.status_code >= 400:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"rps": requests / elapsed, "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "errors": errors}


def cases(file_id: str, job_ids: list[str]):
    rng = random.Random(0)
    body = {"model": "tiny/bert", "training_file": file_id, "task": "sequence_classification",
            "training": {"max_steps": 1}, "hub": {"repo_id": "bench/api"}}

    async def create(client, i):
        return await client.post("/v1/fine_tuning/jobs", json=body)

    async def list_jobs(client, i):
        return await client.get("/v1/fine_tuning/jobs", params={"limit": 20})

    async def list_events(client, i):
        return await client.get(f"/v1/fine_tuning/jobs/{rng.choice(job_ids)}/events", params={"limit": 20})

    return [("create job", create), ("list jobs (10,000)", list_jobs), ("list events", list_events)]


@contextlib.contextmanager
def server(url: str, data_dir: Path, broker: str):
    from testkit.services import free_port
    from testkit.stack import hubtune_cmd

    port = free_port()
    env = {**os.environ, "HUBTUNE_DATABASE_URL": url, "HUBTUNE_DATA_DIR": str(data_dir),
           "HUBTUNE_BROKER_URL": broker, **NO_LIMITS,
           # The server's hub holds no model: the figures are the API and database path, without the
           # create-time look-up of the base model (a hub round trip of its own, bounded by this setting).
           "HUBTUNE_MODEL_CHECK_SECONDS": "0"}
    log = open(data_dir / "server.log", "w")
    proc = subprocess.Popen(hubtune_cmd("server", "--port", str(port), "--no-migrate"), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"server did not start:\n{(data_dir / 'server.log').read_text()}")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def sample_job_ids(url: str, n: int = 500) -> list[str]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from hubtune.db import engine_for
    from hubtune.models import Job

    with Session(engine_for(url)) as s:
        ids = s.execute(select(Job.id)).scalars().all()
    return random.Random(1).sample(ids, min(n, len(ids)))


def run(name: str, url: str, broker: str, *, jobs: int, requests: int, concurrency: int) -> dict:
    import httpx

    from bench.jobs_page import fill

    info = fill(url, jobs=jobs)
    job_ids = sample_job_ids(url)
    results = {}
    with tempfile.TemporaryDirectory() as tmp, server(url, Path(tmp), broker) as base:
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {info['admin']}"}, timeout=30)
        r = admin.post("/v1/files", data={"purpose": "fine-tune"},
                       files={"file": ("t.jsonl", b'{"text": "good", "label": "a"}\n{"text": "bad", "label": "b"}\n')})
        r.raise_for_status()
        print(f"\n{name}: {jobs:,} jobs; {requests} requests per endpoint, {concurrency} in flight, loopback")
        print(f"  {'request':24s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}")
        for label, make in cases(r.json()["id"], job_ids):
            out = asyncio.run(drive(base, info["admin"], make, requests=requests, concurrency=concurrency))
            results[label] = out
            errors = f"  ({out['errors']} errors)" if out["errors"] else ""
            print(f"  {label:24s} {out['rps']:8.0f} {out['p50']:8.1f} {out['p99']:8.1f}{errors}", flush=True)
    return results


def run_all(*, jobs: int, requests: int, concurrency: int, only: str | None) -> dict:
    from hubtune.migrate import upgrade
    from testkit.services import postgres_database

    results = {}
    if only in (None, "postgres"):
        with private_redis() as broker, postgres_database("hubtune_load") as url:
            results["postgres"] = run("PostgreSQL (+ Redis broker)", url, broker, jobs=jobs, requests=requests,
                                      concurrency=concurrency)
    if only in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            upgrade(url)
            results["sqlite"] = run("SQLite (+ file-system queue)", url, "", jobs=jobs,
                                    requests=requests, concurrency=concurrency)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--only", choices=["postgres", "sqlite"])
    args = parser.parse_args()
    run_all(jobs=args.jobs, requests=args.requests, concurrency=args.concurrency, only=args.only)


if __name__ == "__main__":
    main()
