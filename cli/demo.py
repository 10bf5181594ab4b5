"""`hubtune demo`: submit the demo job over REST (LoRA ticket classification on all-MiniLM-L6-v2),
follow it with a progress bar, and print its metrics and where the adapter landed.

The tickets' labels are topic x urgency ("billing-urgent", "bug-normal", ...; 5 of each in the
validation file). Topic alone was too easy to show what fine-tuning adds: a linear probe on the frozen
embeddings scored macro-F1 1.0 like the fine-tune, and the job was flagged "does not beat its
baselines". With urgency the probe scores 0.85 and the fine-tune on the defaults 1.0 (majority 0.03;
BENCHMARKS.md §6).
"""

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
    from cli.endpoint import resolve_key, resolve_url

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
        # Learning rate, epochs and batch size are left "auto" (worker/engine/hparams.py): the demo
        # shows what the defaults give.
        "training": {"max_seq_length": 64},
    }))
    print(f"submitted {job['id']}: LoRA on {DEMO_MODEL}, 160 support tickets in 8 classes (topic x urgency)",
          flush=True)
    job = follow(client, job["id"])
    _summary(job)
    return 0 if job["status"] == "succeeded" else 1


def _upload(client: httpx.Client, name: str) -> str:
    data = resources.files("cli").joinpath("demo_data", name).read_bytes()
    return _check(client.post("/files", data={"purpose": "fine-tune"}, files={"file": (name, data)}))["id"]


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.text}")
    return response.json()


def follow(client: httpx.Client, job_id: str, *, out=sys.stdout) -> dict[str, Any]:
    """Print new events and a progress bar until the job ends; returns the final job.

    On a terminal the bar is redrawn in place. To a file or a pipe nothing is redrawn (no carriage
    returns, no ANSI codes): the bar is a plain line when it changed, at most every PLAIN_BAR_SECONDS.
    Either way the final bar is printed once.
    """
    bar = _Bar(out, live=_is_terminal(out))
    seen: set[str] = set()
    last: dict[str, Any] = {}
    while True:
        job = _check(client.get(f"/fine_tuning/jobs/{job_id}"))
        events = _check(client.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 100}))["data"]
        for event in reversed(events):
            if event["id"] in seen:
                continue
            seen.add(event["id"])
            if event["type"] == "metrics":
                last = {**last, **(event["data"] or {})}  # an evaluation-only step keeps the last train_loss
            else:
                bar.line(time.strftime("%H:%M:%S ", time.localtime(event["created_at"])) + event["message"])
        if job["status"] in TERMINAL:
            bar.finish(_bar(last) if last else "")
            return job
        if last:
            bar.update(_bar(last), suffix=eta(job))
        time.sleep(1)


PLAIN_BAR_SECONDS = 10.0


def _is_terminal(out) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


class _Bar:
    """The progress bar below the event lines: redrawn in place on a terminal, plain lines elsewhere."""

    def __init__(self, out, *, live: bool) -> None:
        self.out, self.live = out, live
        self.shown = ""  # the bar on screen (terminal) or the last bar line written (file or pipe)
        self.bar = ""  # that line without its suffix (the ETA), which the final bar is compared with
        self.written_at = float("-inf")

    def line(self, text: str) -> None:
        if self.live:  # the event goes where the bar was; the bar is drawn again below it
            self._write("\r\033[K" + text + "\n" + self.shown)
        else:
            self._write(text + "\n")

    def update(self, bar: str, *, suffix: str = "") -> None:
        text = bar + suffix
        if text == self.shown:
            return
        if self.live:
            self._write("\r\033[K" + text)
        elif time.monotonic() - self.written_at >= PLAIN_BAR_SECONDS:
            self._write(text + "\n")
            self.written_at = time.monotonic()
        else:
            return
        self.shown, self.bar = text, bar

    def finish(self, text: str) -> None:
        if self.live:
            self._write("\r\033[K" + text + "\n" if text else ("\n" if self.shown else ""))
        elif text and text != self.bar:  # a bar line already written differs only by its ETA at most
            self._write(text + "\n")
        self.shown = self.bar = text

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


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


def _summary(job: dict[str, Any], *, out=sys.stdout) -> None:
    out.write(f"status: {job['status']}\n")
    if job.get("error"):
        out.write(f"error: {job['error']}\n")
    metrics = dict((job.get("result") or {}).get("metrics") or {})
    timings = metrics.pop("timings_s", None)
    for name, value in metrics.items():
        out.write(f"  {name}: {value:.4f}\n" if isinstance(value, float) else f"  {name}: {value}\n")
    if isinstance(timings, dict) and timings:
        out.write(timings_table(timings))
    if job.get("fine_tuned_model"):
        out.write(f"adapter: {job['fine_tuned_model']}\n")


# The training engine's phases (worker.engine.trainer), in run order; train_eval_s is part of train_s.
PHASES = {"load_s": "load", "tokenize_s": "tokenize", "baseline_eval_s": "baseline evaluation",
          "probe_s": "baseline (linear probe)", "samples_s": "sample completions",
          "trainer_setup_s": "trainer setup", "train_s": "train", "train_eval_s": "  of which evaluation",
          "final_eval_s": "final evaluation", "probes_s": "probes", "save_s": "save"}


def timings_table(timings: dict[str, float]) -> str:
    """The run's phases as a table of seconds, with their total."""
    rows = [(PHASES.get(key, key.removesuffix("_s")), float(seconds)) for key, seconds in timings.items()]
    total = sum(float(seconds) for key, seconds in timings.items() if key != "train_eval_s")
    rows.append(("total", total))
    width = max(len("phase"), *(len(name) for name, _ in rows))
    lines = [f"{'phase'.ljust(width)}  {'seconds':>8}", f"{'-' * width}  {'-' * 8}"]
    lines += [f"{name.ljust(width)}  {seconds:8.2f}" for name, seconds in rows]
    return "timings:\n" + "".join(f"  {line}\n" for line in lines)
