"""What hubtune costs over training by hand: the same LoRA fine-tune, side by side in one run.

For each workload (the real all-MiniLM-L6-v2 classifying the demo's support tickets; a small
llama-architecture causal LM built from a config on prompt/completion rows) it runs, alternating
and repeated:
  - plain: bench/plain_peft.py in a fresh process (transformers + peft by hand, no hubtune code);
  - hubtune: a job submitted over REST to an embedded `hubtune up` (SQLite, file-system queue, local
    hub, its two workers), followed to `succeeded`.
Same data, LoRA r/alpha/dropout and targets, steps, batch, learning rate, seed; one checkpoint at the
last step on both sides; evaluation on the validation file after training.

It prints the training phase (trainer.train(): the optimizer steps) of both and their ratio
(plain time / hubtune time: 1.0 means hubtune trains as fast as the script), and where hubtune's
end-to-end time went beside the script's whole process (imports, load, evaluation, save):
queueing + prepare (submit -> running), model load, evaluation, artifact save, publish.

    python bench/training_overhead.py [--quick] [--repeats 3] [--only minilm|llama]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workloads import causal_rows, make_llama, read_jsonl, tickets, write_jsonl  # noqa: E402

LORA = {"r": 8, "alpha": 16, "dropout": 0.05}


@dataclass
class Workload:
    name: str
    repo_id: str  # as the hub knows it
    model_dir: Path
    task: str
    train_file: Path
    valid_file: Path
    steps: int
    batch: int
    lr: float
    max_len: int


def workloads(tmp: Path, *, quick: bool, only: str | None) -> list[Workload]:
    from bench.workloads import minilm_dir

    out = []
    if only in (None, "minilm"):
        train, valid = tickets()
        out.append(Workload("MiniLM-L6 LoRA, tickets classification", "sentence-transformers/all-MiniLM-L6-v2",
                            minilm_dir(), "sequence_classification", train, valid,
                            steps=10 if quick else 30, batch=16, lr=5e-4, max_len=128))
    if only in (None, "llama"):
        model = make_llama(tmp / "small-llama", "small" if not quick else "tiny")
        train = write_jsonl(tmp / "causal_train.jsonl", causal_rows(256, seed=1, max_words=64))
        valid = write_jsonl(tmp / "causal_valid.jsonl", causal_rows(32, seed=2, max_words=64))
        out.append(Workload(f"llama {'tiny' if quick else 'small'} (from a config) LoRA, prompt/completion",
                            "bench/llama", model, "causal_lm", train, valid,
                            steps=10 if quick else 30, batch=8, lr=5e-4, max_len=128))
    return out


# ---------------------------------------------------------------------------------------------
# plain


def run_plain(w: Workload, out_dir: Path, *, seed: int = 42) -> dict:
    spec = {"model_dir": str(w.model_dir), "task": w.task, "train_rows": read_jsonl(w.train_file),
            "valid_rows": read_jsonl(w.valid_file), "steps": w.steps, "batch": w.batch, "lr": w.lr, "seed": seed,
            "max_len": w.max_len, "output_dir": str(out_dir), "device": "cpu", **LORA}
    spec_file = out_dir.parent / f"{out_dir.name}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "plain_peft.py"), f"@{spec_file}"],
                          capture_output=True, text=True, timeout=1200)
    wall = time.monotonic() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"plain script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_wall_s"] = round(wall, 3)  # python start, imports, everything
    return result


# ---------------------------------------------------------------------------------------------
# hubtune


def hubtune_job(stack, client, db_url: str, w: Workload, *, files: dict, seed: int = 42) -> dict:
    """Submit ``w`` as a job over REST, follow it to succeeded; its time breakdown."""
    from bench.stacks import create_job, wait_status
    from testkit.stack import upload

    for path in (w.train_file, w.valid_file):
        if path not in files:
            files[path] = upload(client, path)
    body = {
        "model": w.repo_id, "training_file": files[w.train_file], "validation_file": files[w.valid_file],
        "seed": seed, "task": w.task, "tuning": {"type": "lora", **LORA},
        # One checkpoint at the last step (as the plain script); evaluation after training only.
        "training": {"learning_rate": w.lr, "max_seq_length": w.max_len, "max_steps": w.steps,
                     "save_steps": w.steps, "eval_steps": 10**6},
        "hyperparameters": {"n_epochs": 100, "batch_size": w.batch},
        "hub": {"repo_id": f"admin/bench-{int(time.time() * 1000)}"},
    }
    t0 = time.monotonic()
    job_id = create_job(client, body)
    # Follow it as a user would (once a second): a tighter poll loads the server, which shares the two
    # cores with training, and slows the very thing measured. The figures come from the job's rows.
    job = wait_status(client, job_id, {"succeeded", "failed", "cancelled"}, poll=1.0)
    observed = time.monotonic() - t0
    if job["status"] != "succeeded":
        raise SystemExit(f"hubtune job {job_id} {job['status']}: {job.get('error')}\n{stack.logs()}")
    return {**breakdown(db_url, job_id), "observed_s": round(observed, 3)}


def breakdown(db_url: str, job_id: str) -> dict:
    """Where a finished job's time went, from its row, its events and the engine's own timings."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from hubtune.db import engine_for
    from hubtune.models import Job, JobEvent
    from hubtune.step_events import SERIES_TYPES

    with Session(engine_for(db_url)) as s:
        job = s.get(Job, job_id)
        events = s.execute(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).scalars().all()
        created, started, finished = job.created_at, job.started_at, job.finished_at
        metrics = (job.result or {}).get("metrics", {})
        steps_events = sum(1 for e in events if e.type in SERIES_TYPES)  # shown steps and the thinned ones
        handed = next(e.created_at for e in events if e.message.startswith("Training finished"))
        trained_tokens = job.trained_tokens
        fed_positions = (job.result or {}).get("fed_positions")
    timings = metrics.get("timings_s", {})
    engine_total = sum(v for k, v in timings.items() if k != "train_eval_s")  # that one is part of train_s
    return {
        "train_phase_s": metrics["train_phase_s"],
        "submit_to_running_s": round(started - created, 3),  # prepare + queueing
        # claim, hub snapshot, and the engine: data, tokenizer, model, LoRA, datasets, trainer set-up
        "model_load_s": round((handed - started) - engine_total + timings.get("load_s", 0)
                              + timings.get("tokenize_s", 0) + timings.get("trainer_setup_s", 0), 3),
        "evaluation_s": round(timings.get("baseline_eval_s", 0) + timings.get("probe_s", 0)
                              + timings.get("samples_s", 0) + timings.get("train_eval_s", 0)
                              + timings.get("final_eval_s", 0) + timings.get("probes_s", 0), 3),
        "save_s": timings.get("save_s", 0.0),
        "publish_s": round(finished - handed, 3),
        "end_to_end_s": round(finished - created, 3),
        "metric_events": steps_events,
        "trained_tokens": trained_tokens,
        "fed_positions": fed_positions,
        "train_loss": metrics.get("train_loss"),
    }


# ---------------------------------------------------------------------------------------------
# the per-step bookkeeping alone


def hooks_cost(tmp: Path, *, steps: int = 200) -> dict:
    """What the worker's hooks add to every optimizer step, without the training: on_metrics (the
    metrics event, trained tokens, ETA) and should_stop (the cancel/pause poll), against a running job
    row in SQLite (the embedded database, fsync on commit). Per-step writes (the flush interval at 0,
    as before batching) against the batched writes the worker uses."""
    from hubtune import settings as settings_module
    from hubtune.db import engine_for, session_scope
    from hubtune.lifecycle import Status, claim
    from hubtune.migrate import upgrade
    from hubtune.models import Job
    from worker import hooks as hooks_module
    from worker.lease import Lease

    url = f"sqlite:///{tmp / 'hooks.db'}"
    upgrade(url)
    import os

    os.environ["HUBTUNE_DATABASE_URL"] = url
    settings_module.get_settings.cache_clear()
    flush = hooks_module.METRICS_FLUSH_SECONDS
    out = {}
    try:
        for label, interval in (("per-step writes", 0.0), ("batched writes", flush)):
            job_id = f"ftjob-hooks{int(interval * 1000)}"
            with session_scope() as s:
                s.add(Job(id=job_id, owner="o", status=Status.QUEUED.value, model="m", training_file="f", seed=1,
                          queue="train", spec={}, attempts=0, max_attempts=3, lease_token=0))
            with session_scope() as s:
                token = claim(s, job_id, owner="bench", lease_seconds=600)
            hooks_module.METRICS_FLUSH_SECONDS = interval
            hooks = hooks_module.JobHooks(Lease(job_id, token, lease_seconds=600, heartbeat_seconds=600))
            hooks.on_start(total_steps=steps, trainable_params=1, total_params=2)
            t0 = time.perf_counter()
            for step in range(1, steps + 1):
                hooks.on_metrics({"step": step, "total_steps": steps, "epoch": 0.1, "trained_tokens": 100 * step,
                                  "train_loss": 1.0, "learning_rate": 1e-4, "grad_norm": 1.0})
                hooks.should_stop()
            hooks.flush_metrics()
            out[label] = (time.perf_counter() - t0) / steps * 1000
    finally:
        hooks_module.METRICS_FLUSH_SECONDS = flush
        os.environ.pop("HUBTUNE_DATABASE_URL", None)
        settings_module.get_settings.cache_clear()
        engine_for(url).dispose()
    print(f"\nworker hooks per optimizer step (SQLite, {steps} steps): "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in out.items()))
    return out


# ---------------------------------------------------------------------------------------------
# report


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def best(rows: list[dict], key: str) -> float:
    return min(r[key] for r in rows)


def median_interval(samples: list[float], *, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the median: order statistics chosen by the binomial(n, 1/2)
    law, so nothing is assumed about the machine's drift between rounds beyond independence."""
    from math import comb

    s, n = sorted(samples), len(samples)
    # The narrowest such interval: the largest k with P(k <= Binomial(n, 1/2) <= n - k) >= confidence.
    for k in range(n // 2, -1, -1):
        covered = sum(comb(n, i) for i in range(k, n - k + 1)) / 2**n
        if covered >= confidence:
            return s[k - 1] if k > 0 else float("-inf"), s[n - k] if k > 0 else float("inf")
    return float("-inf"), float("inf")


def report(w: Workload, plain: list[dict], hub: list[dict]) -> dict:
    # Best of the runs: on a shared machine other processes only ever add time, so the minimum is the
    # least disturbed figure; the medians are printed beside it.
    p_train, h_train = best(plain, "train_phase_s"), best(hub, "train_phase_s")
    p_total, h_total = median(plain, "process_wall_s"), median(hub, "end_to_end_s")
    ratio = p_train / h_train
    print(f"\n{w.name}: {w.steps} steps, batch {w.batch}, LoRA r={LORA['r']}; {len(plain)} runs each, alternating")
    print(f"  training phase (best)   plain {p_train:7.2f} s   hubtune {h_train:7.2f} s"
          f"   ratio plain/hubtune {ratio:.3f}")
    print(f"  training phase (median) plain {median(plain, 'train_phase_s'):7.2f} s   hubtune "
          f"{median(hub, 'train_phase_s'):7.2f} s   "
          f"ratio {median(plain, 'train_phase_s') / median(hub, 'train_phase_s'):.3f}"
          f"   (runs: plain {[r['train_phase_s'] for r in plain]}, hubtune {[r['train_phase_s'] for r in hub]})")
    # Each round ran both sides back to back: the ratio within a round cancels the machine's drift.
    paired = [pl["train_phase_s"] / hb["train_phase_s"] for pl, hb in zip(plain, hub)]
    low, high = median_interval(paired)
    interval = f"{low:.3f}-{high:.3f}" if low > float("-inf") else "needs 6 rounds or more"
    print(f"  ratio per round         {[round(x, 3) for x in paired]}   median {statistics.median(paired):.3f}"
          f"   (95 % interval of the median: {interval})")
    print(f"  tokens trained          plain {plain[0]['trained_tokens']}   hubtune {hub[0]['trained_tokens']}"
          f"   positions fed (tokens + padding) plain {plain[0]['fed_positions']} hubtune {hub[0]['fed_positions']}"
          f"   final train loss plain {plain[0]['train_loss']:.4f} hubtune {hub[0]['train_loss']:.4f}")
    print(f"  end to end (median)     plain process {p_total:6.2f} s   hubtune submit->succeeded {h_total:6.2f} s"
          f"   overhead {h_total - p_total:+.2f} s")
    print("  hubtune breakdown (median): " + ", ".join(
        f"{k.removesuffix('_s')} {median(hub, k):.2f} s" for k in
        ("submit_to_running_s", "model_load_s", "train_phase_s", "evaluation_s", "save_s", "publish_s")))
    print("  plain breakdown (median):   " + ", ".join(
        f"{k.removesuffix('_s')} {statistics.median(r['phases'][k] for r in plain):.2f} s" for k in plain[0]["phases"])
          + f", python+imports {median(plain, 'process_wall_s') - median(plain, 'total_s'):.2f} s")
    return {"workload": w.name, "ratio": ratio, "paired_ratio_median": statistics.median(paired),
            "plain_train_s": p_train, "hubtune_train_s": h_train,
            "overhead_s": h_total - p_total}


def run_all(*, quick: bool, repeats: int, only: str | None) -> list[dict]:
    from bench.stacks import embedded

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        loads = workloads(tmp, quick=quick, only=only)
        # `hubtune up` imports MiniLM itself.
        models = {w.repo_id: w.model_dir for w in loads if not w.repo_id.startswith("sentence-transformers/")}
        summaries, files = [], {}
        with embedded(tmp / "stack", models=models) as (stack, key, db_url):
            client = stack.client(key)
            for w in loads:
                # Warm-up: the first job pays the worker's imports; both sides then read a warm disk cache.
                hubtune_job(stack, client, db_url, w, files=files)
                plain, hub = [], []
                for i in range(repeats):
                    for side in (("plain", "hubtune") if i % 2 == 0 else ("hubtune", "plain")):
                        if side == "plain":
                            plain.append(run_plain(w, tmp / f"plain-{len(plain)}-{id(w)}"))
                        else:
                            hub.append(hubtune_job(stack, client, db_url, w, files=files))
                summaries.append(report(w, plain, hub))
            hooks_cost(tmp)
        return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 steps and the tiny llama")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["minilm", "llama"])
    args = parser.parse_args()
    run_all(quick=args.quick, repeats=args.repeats, only=args.only)


if __name__ == "__main__":
    main()
