"""`hubtune demo`: submit the demo job over REST (LoRA ticket classification on all-MiniLM-L6-v2),
follow it with a progress bar, and print its metrics and where the adapter landed."""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from typing import Any

import httpx

DEMO_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TERMINAL = {"succeeded", "failed", "cancelled"}


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="submit the demo fine-tuning job and follow it")
    p.add_argument("--url", default=None, help="server URL (default http://HUBTUNE_HOST:HUBTUNE_PORT)")
    p.add_argument("--key", default=None, help="API key (default: the embedded admin key in the data dir)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    from hubtune.cli.endpoint import resolve_key, resolve_url

    return run_demo(url=resolve_url(args.url).url, key=resolve_key(args.key))


def wait_until_up(url: str, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")
        time.sleep(0.3)


def run_demo(*, url: str, key: str) -> int:
    client = httpx.Client(base_url=f"{url}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)
    train_id = _upload(client, "tickets_train.jsonl")
    valid_id = _upload(client, "tickets_valid.jsonl")
    job = _check(client.post("/fine_tuning/jobs", json={
        "model": DEMO_MODEL, "training_file": train_id, "validation_file": valid_id, "suffix": "tickets",
        "seed": 42, "task": "sequence_classification",
        "tuning": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.05},
        "training": {"learning_rate": 0.001, "max_seq_length": 64},
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 16}}},
    }))
    print(f"submitted {job['id']}: LoRA on {DEMO_MODEL}, 160 support tickets in 4 classes", flush=True)
    job = follow(client, job["id"])
    _summary(job)
    return 0 if job["status"] == "succeeded" else 1


def _upload(client: httpx.Client, name: str) -> str:
    data = resources.files("hubtune").joinpath("demo_data", name).read_bytes()
    return _check(client.post("/files", data={"purpose": "fine-tune"}, files={"file": (name, data)}))["id"]


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.text}")
    return response.json()


def follow(client: httpx.Client, job_id: str, *, out=sys.stdout) -> dict[str, Any]:
    """Print new events and a progress bar until the job ends; returns the final job."""
    seen: set[str] = set()
    progress = ""
    last: dict[str, Any] = {}
    while True:
        job = _check(client.get(f"/fine_tuning/jobs/{job_id}"))
        events = _check(client.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 100}))["data"]
        for event in reversed(events):
            if event["id"] in seen:
                continue
            seen.add(event["id"])
            if event["type"] == "metrics":
                # Evaluation events carry no train_loss: keep showing the last one.
                last = {**last, **(event["data"] or {})}
                progress = _bar(last)
            else:
                out.write("\r\033[K" + time.strftime("%H:%M:%S ", time.localtime(event["created_at"]))
                          + event["message"] + "\n")
        out.write("\r\033[K" + progress + eta(job))
        out.flush()
        if job["status"] in TERMINAL:
            out.write("\n")
            return job
        time.sleep(1)


def _bar(metrics: dict[str, Any], width: int = 30) -> str:
    step, total = int(metrics.get("step", 0)), int(metrics.get("total_steps") or 0)
    frac = step / total if total else 0.0
    filled = int(width * frac)
    loss = metrics.get("train_loss")
    loss_text = f"  loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
    return f"[{'#' * filled}{'.' * (width - filled)}] {100 * frac:5.1f}%  step {step}/{total}{loss_text}"


def eta(job: dict[str, Any]) -> str:
    """The time left by the job's estimated_finish (the API's, from the training rate), while it runs."""
    if job["status"] != "running" or not job.get("estimated_finish"):
        return ""
    left = max(int(job["estimated_finish"] - time.time()), 0)
    hours, rest = divmod(left, 3600)
    return f"  ETA {hours}h{rest // 60:02d}m" if hours else f"  ETA {rest // 60}m{rest % 60:02d}s"


def _summary(job: dict[str, Any]) -> None:
    print(f"status: {job['status']}")
    if job.get("error"):
        print(f"error: {job['error']}")
    metrics = (job.get("result") or {}).get("metrics") or {}
    for name, value in metrics.items():
        print(f"  {name}: {value:.4f}" if isinstance(value, float) else f"  {name}: {value}")
    if job.get("fine_tuned_model"):
        print(f"adapter: {job['fine_tuned_model']}")
