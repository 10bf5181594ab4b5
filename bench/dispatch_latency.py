"""Dispatch latency: how long a job waits between submit and `running`, on Redis and embedded.

Submits N small jobs one at a time (tiny BERT, 2 steps) to an idle worker, each after the previous one
ended, on
  - the distributed stack: PostgreSQL (a fresh database) + a private redis-server + `hubtune server` +
    compose.yaml's two workers (prepare + publish, reusing their task process; train, a fresh task
    process per job);
  - the embedded stack: `hubtune up` (SQLite + the file-system queue, the same two workers).
From the job rows (server clocks, same machine): submit -> queued (the prepare task: validate,
count tokens, estimate memory), queued -> running (the train doorbell, claim) and submit -> running.
Prints p50 and p99 in milliseconds.

    python bench/dispatch_latency.py [--jobs 30] [--only redis|embedded]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stacks import create_job, distributed, embedded, percentile, wait_status  # noqa: E402

TERMINAL = {"succeeded", "failed", "cancelled"}


def job_times(db_url: str, job_id: str) -> dict:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from hubtune.db import engine_for
    from hubtune.models import Job, JobEvent

    with Session(engine_for(db_url)) as s:
        job = s.get(Job, job_id)
        queued = s.execute(select(JobEvent.created_at).where(
            JobEvent.job_id == job_id, JobEvent.message.like("Files validated%"))).scalar_one()
        return {"prepare_ms": (queued - job.created_at) * 1000, "dispatch_ms": (job.started_at - queued) * 1000,
                "submit_to_running_ms": (job.started_at - job.created_at) * 1000}


def measure(stack, key: str, db_url: str, *, jobs: int, data: Path) -> list[dict]:
    from testkit.stack import upload

    client = stack.client(key)
    file_id = upload(client, data)
    body = {"model": "tiny/bert", "training_file": file_id, "task": "sequence_classification", "seed": 1,
            "training": {"max_steps": 2, "max_seq_length": 32, "validation_split": 0.0},
            "hyperparameters": {"n_epochs": 1, "batch_size": 8}, "hub": {"repo_id": "bench/dispatch"}}
    samples = []
    for i in range(jobs + 1):
        job_id = create_job(client, body)
        job = wait_status(client, job_id, TERMINAL)
        if job["status"] != "succeeded":
            raise SystemExit(f"job {job_id} {job['status']}: {job.get('error')}\n{stack.logs()}")
        if i:  # the first job warms the worker's imports
            samples.append(job_times(db_url, job_id))
    return samples


def summarize(name: str, samples: list[dict]) -> dict:
    out = {}
    print(f"\n{name}: {len(samples)} jobs, one at a time, idle worker")
    print(f"  {'interval':32s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for key, label in (("prepare_ms", "submit -> queued (prepare)"), ("dispatch_ms", "queued -> running (train)"),
                       ("submit_to_running_ms", "submit -> running")):
        values = [s[key] for s in samples]
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        out[key] = (p50, p99)
        print(f"  {label:32s} {p50:8.1f} {p99:8.1f}", flush=True)
    return out


def run_all(*, jobs: int, only: str | None) -> dict:
    from testkit.tiny_models import make_tiny_bert, write_classification_jsonl

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = {"tiny/bert": make_tiny_bert(tmp / "tiny-bert")}
        data = write_classification_jsonl(tmp / "train.jsonl", n=32)
        if only in (None, "redis"):
            with distributed(tmp / "redis", models=models) as (stack, key, db_url):
                results["redis"] = summarize("Redis + PostgreSQL", measure(stack, key, db_url, jobs=jobs, data=data))
        if only in (None, "embedded"):
            with embedded(tmp / "embedded", models=models) as (stack, key, db_url):
                results["embedded"] = summarize("embedded (file-system queue + SQLite)",
                                                measure(stack, key, db_url, jobs=jobs, data=data))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--only", choices=["redis", "embedded"])
    args = parser.parse_args()
    run_all(jobs=args.jobs, only=args.only)


if __name__ == "__main__":
    main()
