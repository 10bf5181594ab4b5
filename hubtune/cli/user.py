"""The user's commands over the REST API: `hubtune files upload`, `hubtune jobs create|list|get|cancel|
follow`. Human-readable tables by default, the API's JSON with --json; `follow` (and `create --follow`)
shows the demo's progress bar until the job ends."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from hubtune.cli.demo import _bar, follow

STATUSES = ("validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled")


class ApiFailure(Exception):
    """The API said no (an OpenAI-shaped error) or could not be reached."""


def add_commands(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help="server URL (default http://HUBTUNE_HOST:HUBTUNE_PORT)")
    common.add_argument("--key", default=None,
                        help="API key (default: $HUBTUNE_API_KEY, else the embedded admin key in the data dir)")
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")

    files = sub.add_parser("files", help="training files").add_subparsers(dest="files_command", required=True)
    up = files.add_parser("upload", parents=[common], help="upload a JSONL file for fine-tuning")
    up.add_argument("path", type=Path)
    up.add_argument("--purpose", default="fine-tune")
    up.set_defaults(func=_run(files_upload))

    jobs = sub.add_parser("jobs", help="fine-tuning jobs").add_subparsers(dest="jobs_command", required=True)
    c = jobs.add_parser("create", parents=[common], help="create a fine-tuning job")
    c.add_argument("--model", help="base model repo id (optionally name@revision)")
    c.add_argument("--training-file", help="file id from `hubtune files upload`")
    c.add_argument("--validation-file")
    c.add_argument("--task", choices=["sequence_classification", "causal_lm"])
    c.add_argument("--suffix")
    c.add_argument("--seed", type=int)
    c.add_argument("--n-epochs", type=int)
    c.add_argument("--batch-size", type=int)
    c.add_argument("--learning-rate-multiplier", type=float)
    c.add_argument("--tuning", type=json.loads, help='JSON, e.g. \'{"type": "lora", "r": 8}\'')
    c.add_argument("--training", type=json.loads, help='JSON, e.g. \'{"max_steps": 100}\'')
    c.add_argument("--hub-repo", help="hub repo id for the result (default: named after the job)")
    c.add_argument("--body", type=Path, help="a JSON file with the whole request; the flags above override it")
    c.add_argument("--follow", action="store_true", help="follow the job until it ends")
    c.set_defaults(func=_run(jobs_create))

    ls = jobs.add_parser("list", parents=[common], help="list jobs, newest first")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--owner", help="an owner's jobs (admin keys)")
    ls.add_argument("--model")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--after", help="the last job id of the previous page")
    ls.set_defaults(func=_run(jobs_list))

    for name, fn, text in (("get", jobs_get, "show one job"), ("cancel", jobs_cancel, "cancel a job"),
                           ("follow", jobs_follow, "follow a job's events and progress until it ends")):
        p = jobs.add_parser(name, parents=[common], help=text)
        p.add_argument("job_id")
        p.set_defaults(func=_run(fn))


# --- plumbing ---------------------------------------------------------------------------------------


def _run(command):
    def run(args: argparse.Namespace) -> int:
        try:
            with _client(args) as client:
                return command(client, args) or 0
        except ApiFailure as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return run


def _client(args: argparse.Namespace) -> httpx.Client:
    from hubtune.settings import get_settings

    settings = get_settings()
    url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    key = args.key or os.environ.get("HUBTUNE_API_KEY")
    if not key:
        path = settings.data_dir / "admin.key"
        if not path.exists():
            raise ApiFailure(f"no API key: pass --key, set HUBTUNE_API_KEY, or run `hubtune up` to make {path}")
        key = path.read_text().strip()
    return httpx.Client(base_url=f"{url}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)


def call(client: httpx.Client, method: str, path: str, **kwargs) -> dict[str, Any]:
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise ApiFailure(f"cannot reach {client.base_url}: {exc}") from None
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            param = f" (param: {error['param']})" if error.get("param") else ""
            raise ApiFailure(f"{error['message']}{param}")
        except (ValueError, KeyError, TypeError):
            raise ApiFailure(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}") from None
    return response.json()


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2))


def table(rows: list[list[str]], headers: list[str], out=sys.stdout) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        out.write("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")


def _when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _method(job: dict[str, Any]) -> str:
    return f"{(job.get('tuning') or {}).get('type', 'lora')}/{job.get('task') or '-'}"


# --- commands ---------------------------------------------------------------------------------------


def files_upload(client: httpx.Client, args: argparse.Namespace) -> int:
    if not args.path.is_file():
        raise ApiFailure(f"{args.path} is not a file")
    with args.path.open("rb") as fh:
        f = call(client, "POST", "/files", data={"purpose": args.purpose}, files={"file": (args.path.name, fh)})
    if args.json:
        _dump(f)
    else:
        table([[f["id"], f["filename"], str(f["bytes"]), f["purpose"]]], ["ID", "FILENAME", "BYTES", "PURPOSE"])
    return 0


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(args.body.read_text()) if args.body else {}
    for flag, field in (("model", "model"), ("training_file", "training_file"), ("validation_file", "validation_file"),
                        ("task", "task"), ("suffix", "suffix"), ("seed", "seed"), ("tuning", "tuning"),
                        ("training", "training")):
        if getattr(args, flag) is not None:
            body[field] = getattr(args, flag)
    hyper = {k: v for k, v in (("n_epochs", args.n_epochs), ("batch_size", args.batch_size),
                               ("learning_rate_multiplier", args.learning_rate_multiplier)) if v is not None}
    if hyper:
        body["method"] = {"type": "supervised", "supervised": {"hyperparameters": hyper}}
    if args.hub_repo:
        body["hub"] = {**body.get("hub", {}), "repo_id": args.hub_repo}
    for required in ("model", "training_file"):
        if not body.get(required):
            raise ApiFailure(f"--{required.replace('_', '-')} is required (or put it in --body)")
    return body


def jobs_create(client: httpx.Client, args: argparse.Namespace) -> int:
    job = call(client, "POST", "/fine_tuning/jobs", json=request_body(args))
    if args.follow:
        if not args.json:
            print(f"created {job['id']}", flush=True)
        return _follow(client, job["id"], as_json=args.json)
    _show(job, as_json=args.json)
    return 0


def jobs_list(client: httpx.Client, args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("status", args.status), ("owner", args.owner), ("model", args.model),
                                ("limit", args.limit), ("after", args.after)) if v is not None}
    page = call(client, "GET", "/fine_tuning/jobs", params=params)
    if args.json:
        _dump(page)
        return 0
    rows = [[j["id"], j["status"], j.get("stage") or "-", j["model"], _method(j), j["organization_id"],
             _when(j["created_at"]), _when(j.get("finished_at"))] for j in page["data"]]
    table(rows, ["ID", "STATUS", "STAGE", "MODEL", "METHOD", "OWNER", "CREATED", "FINISHED"])
    if page["has_more"] and page["data"]:
        print(f"(more: --after {page['data'][-1]['id']})")
    return 0


def _latest_metrics(client: httpx.Client, job_id: str) -> dict[str, Any]:
    events = call(client, "GET", f"/fine_tuning/jobs/{job_id}/events", params={"limit": 50})["data"]
    merged: dict[str, Any] = {}
    for event in reversed(events):  # oldest first, so newer figures win
        if event["type"] == "metrics":
            merged.update(event["data"] or {})
    return merged


def _show(job: dict[str, Any], *, as_json: bool, metrics: dict[str, Any] | None = None) -> None:
    if as_json:
        _dump(job)
        return
    rows = [["id", job["id"]], ["status", job["status"]], ["stage", job.get("stage") or "-"],
            ["model", job["model"]], ["method", _method(job)], ["owner", job["organization_id"]],
            ["created", _when(job["created_at"])], ["finished", _when(job.get("finished_at"))]]
    if metrics and metrics.get("total_steps"):
        rows.append(["progress", _bar(metrics)])
    if job.get("estimated_finish"):
        rows.append(["estimated finish", _when(job["estimated_finish"])])
    if job.get("error"):
        rows.append(["error", f"{job['error']['code']}: {job['error']['message']}"])
    if job.get("fine_tuned_model"):
        rows.append(["fine-tuned model", job["fine_tuned_model"]])
    for name, value in ((job.get("result") or {}).get("metrics") or {}).items():
        rows.append([f"  {name}", f"{value:.4f}" if isinstance(value, float) else str(value)])
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


def jobs_get(client: httpx.Client, args: argparse.Namespace) -> int:
    job = call(client, "GET", f"/fine_tuning/jobs/{args.job_id}")
    _show(job, as_json=args.json, metrics=None if args.json else _latest_metrics(client, args.job_id))
    return 0


def jobs_cancel(client: httpx.Client, args: argparse.Namespace) -> int:
    job = call(client, "POST", f"/fine_tuning/jobs/{args.job_id}/cancel")
    if args.json:
        _dump(job)
    else:
        print(f"{job['id']}: {job['status']}")
    return 0


def _follow(client: httpx.Client, job_id: str, *, as_json: bool) -> int:
    call(client, "GET", f"/fine_tuning/jobs/{job_id}")  # a clean error for an unknown id
    try:
        job = follow(client, job_id, out=sys.stderr if as_json else sys.stdout)
    except RuntimeError as exc:  # demo's _check: the API answered an error mid-way
        raise ApiFailure(str(exc)) from None
    _show(job, as_json=as_json)
    return 0 if job["status"] == "succeeded" else 1


def jobs_follow(client: httpx.Client, args: argparse.Namespace) -> int:
    return _follow(client, args.job_id, as_json=args.json)
