"""What hubtune costs over training by hand: the same LoRA fine-tune, side by side in one run.

For each workload (the real all-MiniLM-L6-v2 classifying the demo's support tickets; a small
llama-architecture causal LM built from a config on prompt/completion rows) it runs, alternating
and repeated:
  - plain: bench/plain_peft.py in a fresh process (transformers + peft by hand, no hubtune code);
  - hubtune: a job submitted over REST to an embedded `hubtune up` (SQLite, file-system queue, local
    hub, one worker), followed to `succeeded`.
Same data, LoRA r/alpha/dropout and targets, steps, batch, learning rate, seed; one checkpoint at the
last step on both sides; evaluation on the validation file after training.

It prints the training phase (trainer.train(): the optimizer steps) of both and their ratio
(plain time / hubtune time: 1.0 means hubtune trains as fast as the script), and where hubtune's
end-to-end time went beside the script's whole process (imports, load, evaluation, save):
queueing + prepare (submit -> running), model load, evaluation, artifact save, publish.

    python bench/training_overhead.py [--quick] [--repeats 2] [--only minilm|llama]
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
                            steps=10 if quick else 40, batch=16, lr=5e-4, max_len=128))
    if only in (None, "llama"):
        model = make_llama(tmp / "small-llama", "small" if not quick else "tiny")
        train = write_jsonl(tmp / "causal_train.jsonl", causal_rows(256, seed=1))
        valid = write_jsonl(tmp / "causal_valid.jsonl", causal_rows(32, seed=2))
        out.append(Workload(f"llama {'tiny' if quick else 'small'} (from a config) LoRA, prompt/completion",
                            "bench/llama", model, "causal_lm", train, valid,
                            steps=10 if quick else 40, batch=8, lr=5e-4, max_len=256))
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


class Embedded:
    """`hubtune up` in a temporary data dir: SQLite, file-system queue, local hub, one worker."""

    def __init__(self, root: Path) -> None:
        from tests.support.stack import Stack

        env = {"HUBTUNE_DATABASE_URL": "", "HUBTUNE_BROKER_URL": "", "HUBTUNE_HUB_BACKEND": "local",
               "HUBTUNE_HUB_DIR": "", "HUBTUNE_RATE_LIMIT_PER_MINUTE": "0"}
        self.stack = Stack(root, env)
        self.db_url = f"sqlite:///{root / 'data' / 'hubtune.db'}"
        self.files: dict[Path, str] = {}

    def start(self, models: list[Workload]) -> Embedded:
        for w in models:
            if not w.repo_id.startswith("sentence-transformers/"):  # `hubtune up` imports MiniLM itself
                self.stack.run("hub", "import", str(w.model_dir), w.repo_id)
        self.stack.spawn("up", "up", "--port", str(self.stack.port))
        self.stack.wait_healthy(timeout=180)
        key = (self.stack.root / "data" / "admin.key").read_text().strip()
        self.client = self.stack.client(key)
        return self

    def stop(self) -> None:
        self.stack.stop()

    def file_id(self, path: Path) -> str:
        from tests.support.stack import upload

        if path not in self.files:
            self.files[path] = upload(self.client, path)
        return self.files[path]

    def run(self, w: Workload, *, seed: int = 42, extra_training: dict | None = None) -> dict:
        body = {
            "model": w.repo_id, "training_file": self.file_id(w.train_file),
            "validation_file": self.file_id(w.valid_file), "seed": seed, "task": w.task,
            "tuning": {"type": "lora", **LORA},
            # One checkpoint at the last step (as the plain script); evaluation after training only.
            "training": {"learning_rate": w.lr, "max_seq_length": w.max_len, "max_steps": w.steps,
                         "save_steps": w.steps, "eval_steps": 10**6, **(extra_training or {})},
            "hyperparameters": {"n_epochs": 100, "batch_size": w.batch},
            "hub": {"repo_id": f"admin/bench-{int(time.time() * 1000)}"},
        }
        t0 = time.monotonic()
        response = self.client.post("/fine_tuning/jobs", json=body)
        if response.status_code != 200:
            raise SystemExit(f"creating the job failed: {response.status_code} {response.text}")
        job_id = response.json()["id"]
        while True:
            job = self.client.get(f"/fine_tuning/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.05)
        observed = time.monotonic() - t0
        if job["status"] != "succeeded":
            raise SystemExit(f"hubtune job {job_id} {job['status']}: {job.get('error')}\n{self.stack.logs()}")
        return {**breakdown(self.db_url, job_id), "observed_s": round(observed, 3)}


def breakdown(db_url: str, job_id: str) -> dict:
    """Where a finished job's time went, from its row, its events and the engine's own timings."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from hubtune.db import engine_for
    from hubtune.models import Job, JobEvent

    with Session(engine_for(db_url)) as s:
        job = s.get(Job, job_id)
        events = s.execute(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).scalars().all()
        created, started, finished = job.created_at, job.started_at, job.finished_at
        metrics = (job.result or {}).get("metrics", {})
        steps_events = sum(1 for e in events if e.type == "metrics")
        handed = next(e.created_at for e in events if e.message.startswith("Training finished"))
        trained_tokens = job.trained_tokens
    timings = metrics.get("timings_s", {})
    engine_total = sum(timings.values())
    return {
        "train_phase_s": metrics["train_phase_s"],
        "submit_to_running_s": round(started - created, 3),  # prepare + queueing
        # claim, hub snapshot, and the engine: data, tokenizer, model, LoRA, datasets, trainer set-up
        "model_load_s": round((handed - started) - engine_total + timings.get("load_s", 0) + timings.get("tokenize_s", 0)
                              + timings.get("trainer_setup_s", 0), 3),
        "evaluation_s": round(timings.get("baseline_eval_s", 0) + timings.get("final_eval_s", 0)
                              + timings.get("probes_s", 0), 3),
        "save_s": timings.get("save_s", 0.0),
        "publish_s": round(finished - handed, 3),
        "end_to_end_s": round(finished - created, 3),
        "metric_events": steps_events,
        "trained_tokens": trained_tokens,
        "train_loss": metrics.get("train_loss"),
    }


# ---------------------------------------------------------------------------------------------
# report


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def report(w: Workload, plain: list[dict], hub: list[dict]) -> dict:
    p_train, h_train = median(plain, "train_phase_s"), median(hub, "train_phase_s")
    p_total, h_total = median(plain, "process_wall_s"), median(hub, "end_to_end_s")
    ratio = p_train / h_train
    print(f"\n{w.name}: {w.steps} steps, batch {w.batch}, LoRA r={LORA['r']}; {len(plain)} runs each, medians")
    print(f"  training phase   plain {p_train:7.2f} s   hubtune {h_train:7.2f} s   ratio plain/hubtune {ratio:.3f}"
          f"   (runs: plain {[r['train_phase_s'] for r in plain]}, hubtune {[r['train_phase_s'] for r in hub]})")
    print(f"  tokens trained   plain {plain[0]['trained_tokens']}   hubtune {hub[0]['trained_tokens']}"
          f"   final train loss plain {plain[0]['train_loss']:.4f} hubtune {hub[0]['train_loss']:.4f}")
    print(f"  end to end       plain process {p_total:6.2f} s   hubtune submit->succeeded {h_total:6.2f} s"
          f"   overhead {h_total - p_total:+.2f} s")
    print("  hubtune breakdown: " + ", ".join(
        f"{k.removesuffix('_s')} {median(hub, k):.2f} s" for k in
        ("submit_to_running_s", "model_load_s", "train_phase_s", "evaluation_s", "save_s", "publish_s")))
    print("  plain breakdown:   " + ", ".join(f"{k.removesuffix('_s')} {statistics.median(r['phases'][k] for r in plain):.2f} s"
                                              for k in plain[0]["phases"])
          + f", python+imports {median(plain, 'process_wall_s') - median(plain, 'total_s'):.2f} s")
    return {"workload": w.name, "ratio": ratio, "plain_train_s": p_train, "hubtune_train_s": h_train,
            "overhead_s": h_total - p_total}


def run_all(*, quick: bool, repeats: int, only: str | None) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        loads = workloads(tmp, quick=quick, only=only)
        embedded = Embedded(tmp / "stack").start(loads)
        summaries = []
        try:
            for w in loads:
                embedded.run(w)  # warm-up: first job pays the worker's imports; the other side gets a warm disk cache
                plain, hub = [], []
                for i in range(repeats):
                    order = ("plain", "hubtune") if i % 2 == 0 else ("hubtune", "plain")
                    for side in order:
                        if side == "plain":
                            plain.append(run_plain(w, tmp / f"plain-{len(plain)}-{id(w)}"))
                        else:
                            hub.append(embedded.run(w))
                summaries.append(report(w, plain, hub))
        finally:
            embedded.stop()
        return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 steps and the tiny llama")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", choices=["minilm", "llama"])
    args = parser.parse_args()
    run_all(quick=args.quick, repeats=args.repeats, only=args.only)


if __name__ == "__main__":
    main()
