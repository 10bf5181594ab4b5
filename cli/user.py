"""The user's commands over the REST API: `hubtune files upload|list|delete` and `hubtune jobs create|list|
get|cancel|pause|resume|events|checkpoints|follow`. Human-readable tables by default, the API's JSON with
--json; `follow` (and `create --follow`) shows the demo's progress bar, with the job's ETA, until the job
ends. The server and key are found as cli/endpoint.py says; failures are worded once, in
cli/errors.py."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from cli.demo import _bar, eta, follow
from cli.endpoint import KEY_ENV, URL_ENV, Endpoint, resolve_key, resolve_url
from cli.errors import CliError, UsageError

STATUSES = ("validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled")
JSON_EXAMPLES = {"--tuning": '{"type": "lora", "r": 8}', "--training": '{"max_steps": 100}'}


class ApiFailure(CliError):
    """The API said no (an OpenAI-shaped error) or could not be reached."""


def add_commands(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None,
                        help=f"server URL (default: ${URL_ENV}, else the one `hubtune up` recorded in the data dir, "
                             "else http://HUBTUNE_HOST:HUBTUNE_PORT)")
    common.add_argument("--key", default=None,
                        help=f"API key (default: ${KEY_ENV}, else the embedded admin key in the data dir)")
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")

    files = sub.add_parser("files", help="training files").add_subparsers(dest="files_command", required=True)
    up = files.add_parser("upload", parents=[common], help="upload a JSONL file for fine-tuning")
    up.add_argument("path", type=Path)
    up.add_argument("--purpose", default="fine-tune")
    up.set_defaults(func=_run(files_upload))
    fl = files.add_parser("list", parents=[common], help="list files, newest first")
    fl.add_argument("--purpose")
    fl.add_argument("--limit", type=int, default=100)
    fl.add_argument("--after", help="the last file id of the previous page")
    fl.set_defaults(func=_run(files_list))
    fd = files.add_parser("delete", parents=[common], help="delete a file")
    fd.add_argument("file_id")
    fd.set_defaults(func=_run(files_delete))

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
    for option, example in JSON_EXAMPLES.items():
        c.add_argument(option, type=json_object(option), help=f"JSON, e.g. '{example}'")
    c.add_argument("--hub-repo", help="hub repo id for the result (default: named after the job)")
    c.add_argument("--metadata", type=key_value("--metadata"), action="append", metavar="KEY=VALUE",
                   help="a metadata pair (repeat for more; up to 16)")
    c.add_argument("--integration", type=integration, action="append", metavar="TYPE|JSON",
                   help="tracking: mlflow, tensorboard, wandb, or JSON such as "
                        "'{\"type\": \"mlflow\", \"mlflow\": {\"experiment_name\": \"tickets\"}}' (repeatable)")
    c.add_argument("--body", type=Path, help="a JSON file with the whole request; the flags above override it")
    c.add_argument("--follow", action="store_true", help="follow the job until it ends")
    c.set_defaults(func=_run(jobs_create))

    ls = jobs.add_parser("list", parents=[common], help="list jobs, newest first")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--owner", help="an owner's jobs (admin keys)")
    ls.add_argument("--model")
    ls.add_argument("--metadata", type=key_value("--metadata"), action="append", metavar="KEY=VALUE",
                    help="only jobs with this metadata pair (repeat: all of them)")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--after", help="the last job id of the previous page")
    ls.set_defaults(func=_run(jobs_list))

    for name, fn, text in (("get", jobs_get, "show one job"), ("cancel", jobs_cancel, "cancel a job"),
                           ("pause", jobs_pause, "pause a job (it keeps a checkpoint to resume from)"),
                           ("resume", jobs_resume, "resume a paused job from its checkpoint"),
                           ("follow", jobs_follow, "follow a job's events and progress until it ends")):
        p = jobs.add_parser(name, parents=[common], help=text)
        p.add_argument("job_id")
        p.set_defaults(func=_run(fn))
    for name, fn, text, limit in (("events", jobs_events, "a job's events, oldest first", 20),
                                  ("checkpoints", jobs_checkpoints, "a job's checkpoints, newest first", 10)):
        p = jobs.add_parser(name, parents=[common], help=text)
        p.add_argument("job_id")
        p.add_argument("--limit", type=int, default=limit, help=f"how many of the newest (default {limit})")
        p.add_argument("--after", help="the last id of the previous page (older ones)")
        p.set_defaults(func=_run(fn))


# --- plumbing ---------------------------------------------------------------------------------------


def _run(command):
    def run(args: argparse.Namespace) -> int:
        endpoint = resolve_url(args.url)
        with _client(endpoint, args) as client:
            try:
                return command(client, args) or 0
            except httpx.TransportError as exc:  # from call() or from the demo's follow()
                raise ApiFailure(_unreachable(endpoint, exc)) from None
    return run


def _client(endpoint: Endpoint, args: argparse.Namespace) -> httpx.Client:
    key = resolve_key(args.key)
    return httpx.Client(base_url=f"{endpoint.url}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _unreachable(endpoint: Endpoint, exc: httpx.TransportError) -> str:
    return (f"cannot reach the hubtune server at {endpoint.url} ({endpoint.source}): {exc or type(exc).__name__}; "
            f"start one with `hubtune up`, or point elsewhere with --url or ${URL_ENV}")


def call(client: httpx.Client, method: str, path: str, **kwargs) -> dict[str, Any]:
    response = client.request(method, path, **kwargs)
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            param = f" (param: {error['param']})" if error.get("param") else ""
            raise ApiFailure(f"{error['message']}{param}")
        except (ValueError, KeyError, TypeError):
            raise ApiFailure(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}") from None
    return response.json()


def json_object(option: str):
    """An argparse type for a JSON-valued option: a one-line usage error that says what the parser
    found, and where, instead of argparse's "invalid loads value"."""
    def parse(text: str) -> dict[str, Any]:
        try:
            return parse_json_object(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}; e.g. {option} '{JSON_EXAMPLES[option]}'") from None
    return parse


def key_value(option: str):
    """An argparse type for KEY=VALUE (the value may hold '=' too)."""
    def parse(text: str) -> tuple[str, str]:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}; e.g. {option} team=support")
        return key, value
    return parse


def integration(text: str) -> dict[str, Any]:
    """`--integration mlflow` (the deployment's defaults) or the integration's JSON object."""
    if text.strip().startswith("{"):
        try:
            return parse_json_object(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}; e.g. --integration tensorboard") from None
    return {"type": text.strip()}


def parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        near = f" (near {text[exc.pos:exc.pos + 20]!r})" if exc.pos < len(text) else ""
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{near}") from None
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object ({{...}}) but {type(value).__name__}")
    return value


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2))


def table(rows: list[list[str]], headers: list[str], out=sys.stdout) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        out.write("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")


def _when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _clock(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


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


def files_list(client: httpx.Client, args: argparse.Namespace) -> int:
    page = call(client, "GET", "/files", params={**_page(args), **({"purpose": args.purpose} if args.purpose else {})})
    if args.json:
        _dump(page)
        return 0
    table([[f["id"], f["filename"], str(f["bytes"]), f["purpose"], _when(f["created_at"])] for f in page["data"]],
          ["ID", "FILENAME", "BYTES", "PURPOSE", "CREATED"])
    _more(page)
    return 0


def files_delete(client: httpx.Client, args: argparse.Namespace) -> int:
    deleted = call(client, "DELETE", f"/files/{args.file_id}")
    if args.json:
        _dump(deleted)
    else:
        print(f"{deleted['id']}: deleted")
    return 0


def _body_file(path: Path) -> dict[str, Any]:
    try:
        return parse_json_object(path.read_text())
    except ValueError as exc:
        raise UsageError(f"--body {path}: {exc}") from None


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = _body_file(args.body) if args.body else {}
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
    if args.metadata:
        body["metadata"] = {**(body.get("metadata") or {}), **dict(args.metadata)}
    if args.integration:
        body["integrations"] = args.integration
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
    params.update({f"metadata[{key}]": value for key, value in args.metadata or []})
    page = call(client, "GET", "/fine_tuning/jobs", params=params)
    if args.json:
        _dump(page)
        return 0
    rows = [[j["id"], j["status"], j.get("stage") or "-", j["model"], _method(j), j["organization_id"],
             _when(j["created_at"]), _when(j.get("finished_at"))] for j in page["data"]]
    table(rows, ["ID", "STATUS", "STAGE", "MODEL", "METHOD", "OWNER", "CREATED", "FINISHED"])
    _more(page)
    return 0


def _more(page: dict[str, Any], what: str = "more") -> None:
    if page["has_more"] and page["data"]:
        print(f"({what}: --after {page['data'][-1]['id']})")


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
        rows.append(["estimated finish", _when(job["estimated_finish"]) + eta(job)])
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


def _change(action: str):
    def change(client: httpx.Client, args: argparse.Namespace) -> int:
        job = call(client, "POST", f"/fine_tuning/jobs/{args.job_id}/{action}")
        if args.json:
            _dump(job)
        else:
            print(f"{job['id']}: {job['status']}")
        return 0
    return change


jobs_cancel, jobs_pause, jobs_resume = _change("cancel"), _change("pause"), _change("resume")


def jobs_events(client: httpx.Client, args: argparse.Namespace) -> int:
    page = call(client, "GET", f"/fine_tuning/jobs/{args.job_id}/events", params=_page(args))
    if args.json:
        _dump(page)
        return 0
    # The API pages newest first; a log reads oldest first.
    table([[_clock(e["created_at"]), e["level"], e["message"]] for e in reversed(page["data"])],
          ["TIME", "LEVEL", "MESSAGE"])
    _more(page, "older")
    return 0


def jobs_checkpoints(client: httpx.Client, args: argparse.Namespace) -> int:
    page = call(client, "GET", f"/fine_tuning/jobs/{args.job_id}/checkpoints", params=_page(args))
    if args.json:
        _dump(page)
        return 0
    rows = [[c["id"], str(c["step_number"]), c["fine_tuned_model_checkpoint"], _when(c["created_at"]),
             _figures(c["metrics"])] for c in page["data"]]
    table(rows, ["ID", "STEP", "CHECKPOINT", "CREATED", "METRICS"])
    _more(page, "older")
    return 0


def _page(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("limit", args.limit), ("after", args.after)) if v is not None}


def _figures(metrics: dict[str, Any]) -> str:
    shown = [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items() if k != "step"]
    return " ".join(shown) or "-"


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
