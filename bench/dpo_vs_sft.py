"""DPO vs SFT on the same model, data and settings, measured side by side in one run.

SmolLM2-135M-Instruct (bench/real_models.py) with hubtune's LoRA defaults trains, through the engine
(worker.engine.trainer.train), on the same chatterbot-corpus chats (bench/real_data.py): SFT on
``{"messages": [user, preferred reply]}``, DPO on ``{"input", "preferred_output", "non_preferred_output"}``
with the same preferred replies. Same steps, batch, sequence length, learning rate and seed. Each runs in a
fresh process of its own, so that its peak memory is its own: the peak RSS on CPU, the peak allocated
CUDA memory on a GPU. Beside them, hubtune's memory estimate (hubtune/estimator.py) for each.

    python bench/dpo_vs_sft.py [--pairs 32] [--batch-size 4] [--epochs 1] [--max-seq-length 128] [--tuning full]

``--tuning full`` compares full fine-tuning instead, where DPO's reference is a frozen copy of the model.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.real_data import chatterbot_preference_pairs  # noqa: E402
from bench.real_models import smollm2_dir  # noqa: E402

LEARNING_RATE = 1e-4


def _rows(method: str, n: int) -> list[dict]:
    pairs, _ = chatterbot_preference_pairs(n, 0, seed=7)
    if method == "dpo":
        return pairs
    return [{"messages": p["input"]["messages"] + p["preferred_output"]} for p in pairs]


def run_one(method: str, args) -> dict:
    """Train one job in this process; its timings and peak memory."""
    import torch

    from hubtune.spec import Training, Tuning
    from worker.engine.plan import NullHooks, TrainPlan
    from worker.engine.trainer import train

    root = Path(tempfile.mkdtemp(prefix=f"bench-{method}-"))
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(method, args.pairs)))
    plan = TrainPlan.in_folder(
        root, task="causal_lm", model_dir=smollm2_dir(), train_file=data, method=method, seed=3,
        tuning=Tuning(type=args.tuning), training=Training(max_seq_length=args.max_seq_length, validation_split=0.0),
        hyperparameters={"n_epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": LEARNING_RATE,
                         "learning_rate_multiplier": 1.0, "beta": 0.1},
    )
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.monotonic()
    result = train(plan, NullHooks())
    wall = time.monotonic() - started
    timings = result.metrics["timings_s"]
    # The optimizer steps alone: SFT's train phase less the evaluations the Trainer ran inside it
    # (DPO runs none here: nothing is held out).
    steps_s = result.metrics.get("train_phase_s", timings["train_s"] - timings.get("train_eval_s", 0.0))
    peak = torch.cuda.max_memory_allocated() if gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"method": method, "steps": result.steps, "train_s": round(steps_s, 2),
            "s_per_step": round(steps_s / max(result.steps, 1), 3), "job_wall_s": round(wall, 1),
            "peak_bytes": int(peak), "peak_kind": "CUDA allocated" if gpu else "process RSS",
            "trained_tokens": result.trained_tokens}


def _estimate(method: str, args) -> int:
    from hubtune.estimator import estimate_request
    from hubtune.spec import JobRequest

    request = JobRequest(model="m", training_file="f", method={"type": method}, tuning={"type": args.tuning},
                         training={"max_seq_length": args.max_seq_length},
                         hyperparameters={"batch_size": args.batch_size})
    config = json.loads((smollm2_dir() / "config.json").read_text())
    return estimate_request(request, config=config, gpu=False, task="causal_lm").total_bytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--tuning", choices=("lora", "full"), default="lora")
    p.add_argument("--one", choices=("supervised", "dpo"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return 0
    smollm2_dir()  # convert the GGUF once, before either run is timed
    rows = []
    for method in ("supervised", "dpo"):
        out = subprocess.run([sys.executable, __file__, "--one", method, "--pairs", str(args.pairs),
                              "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
                              "--max-seq-length", str(args.max_seq_length), "--tuning", args.tuning],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["estimate_bytes"] = _estimate(method, args)
        rows.append(row)
    tuning = "LoRA r=8" if args.tuning == "lora" else "full fine-tuning"
    print(f"SmolLM2-135M-Instruct, {tuning}, {args.pairs} chats/pairs, batch {args.batch_size}, "
          f"{args.epochs} epoch(s), max_seq_length {args.max_seq_length}, {platform.processor() or platform.machine()}")
    print(f"{'method':<11}{'steps':>6}{'s/step':>9}{'train s':>9}{'job s':>8}{'peak MiB':>10}{'estimate MiB':>14}")
    for r in rows:
        print(f"{r['method']:<11}{r['steps']:>6}{r['s_per_step']:>9.3f}{r['train_s']:>9.1f}{r['job_wall_s']:>8.1f}"
              f"{r['peak_bytes'] / 2**20:>10.0f}{r['estimate_bytes'] / 2**20:>14.0f}")
    sft, dpo = rows
    print(f"DPO/SFT: {dpo['s_per_step'] / sft['s_per_step']:.2f}x time per step, "
          f"{dpo['peak_bytes'] / sft['peak_bytes']:.2f}x peak memory ({sft['peak_kind']}), "
          f"{dpo['estimate_bytes'] / sft['estimate_bytes']:.2f}x estimate")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
