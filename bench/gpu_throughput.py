"""Training throughput on a GPU: tokens per second and MFU, hubtune's training path against a plain
transformers + peft script, on the same data.

The model is a ~1.1 B-parameter llama-architecture causal LM built from a config (no download; 16
layers, hidden 2048, MiniLM's 30,522-token vocabulary), LoRA r=16 on every projection; the data are
prompt/completion rows whose lengths spread from 16 to ~1,000 tokens (so padding costs what it
costs in real data). Variants, each in a fresh process, the same steps, batch and seed:
  - plain:              bench/plain_peft.py: bf16 autocast, pad to the longest in the batch
  - hubtune:            worker.engine.trainer.train (what a worker runs), bf16, padded
  - hubtune packing:    + training.packing (the batch laid end to end in one row, no padding)
  - hubtune packing gc: + training.gradient_checkpointing
Throughput is counted on the steady steps (the first --skip steps pay kernel warm-up): real
(non-padding) tokens / seconds. MFU = model FLOPs per token x tokens/s / the GPU's peak dense bf16
FLOP/s, where model FLOPs per token = 4 N (forward + activation gradients through the frozen
weights) + 2 N_trainable (weight gradients) + 6 x layers x hidden x mean context (attention scores
and values, forward + backward); recomputation by gradient checkpointing is not useful work and is
not counted.

    python bench/gpu_throughput.py                 # on a GPU: the ~1B model (< 10 minutes on an H100/H200)
    python bench/gpu_throughput.py --size tiny     # the same code path on CPU in seconds (smoke check)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workloads import causal_rows, llama_config, llama_tokenizer, make_llama, write_jsonl  # noqa: E402

# Dense bf16 tensor-core peaks (FLOP/s), by a substring of torch.cuda.get_device_name().
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12,
             "RTX 4090": 165e12, "A6000": 155e12}
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}
VARIANTS = {
    "plain": {"side": "plain"},
    "hubtune": {"side": "hubtune", "packing": False, "gradient_checkpointing": False},
    "hubtune packing": {"side": "hubtune", "packing": True, "gradient_checkpointing": False},
    "hubtune packing gc": {"side": "hubtune", "packing": True, "gradient_checkpointing": True},
}


# ---------------------------------------------------------------------------------------------
# In the child process: one variant


class TimingHooks:
    """Engine hooks that note when each step's metrics arrive (the engine logs every step)."""

    def __init__(self) -> None:
        self.marks: list[tuple[int, float, int]] = []  # (step, time, trained tokens so far)

    def on_start(self, **kwargs) -> None:
        pass

    def on_metrics(self, metrics: dict) -> None:
        if "train_loss" in metrics:
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.marks.append((metrics["step"], time.monotonic(), metrics["trained_tokens"]))

    def on_checkpoint(self, **kwargs) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def run_hubtune(spec: dict) -> dict:
    from hubtune.spec import Training, Tuning
    from worker.engine.plan import TrainPlan
    from worker.engine.trainer import train

    out = Path(spec["output_dir"])
    training = Training(learning_rate=spec["lr"], max_seq_length=spec["max_len"], max_steps=spec["steps"],
                        save_steps=spec["steps"], eval_steps=10**6, validation_split=0.0, bf16=spec["bf16"],
                        packing=spec["packing"], gradient_checkpointing=spec["gradient_checkpointing"])
    # A small validation file: hubtune evaluates base and tuned models (outside the counted steps).
    plan = TrainPlan.in_folder(out, task="causal_lm", model_dir=Path(spec["model_dir"]),
                               train_file=Path(spec["train_file"]), valid_file=spec.get("valid_file") or None,
                               seed=spec["seed"], tuning=Tuning(type="lora", **LORA), training=training,
                               hyperparameters={"n_epochs": 100, "batch_size": spec["batch"], "learning_rate": spec["lr"]})
    hooks = TimingHooks()
    result = train(plan, hooks)
    marks, skip = hooks.marks, spec["skip_steps"]
    steady = {}
    if len(marks) > skip + 1:
        (_, t0, n0), (_, t1, n1) = marks[skip - 1 if skip else 0], marks[-1]
        steady = {"steps": marks[-1][0] - marks[skip - 1 if skip else 0][0], "seconds": round(t1 - t0, 4),
                  "tokens": n1 - n0, "tokens_per_s": (n1 - n0) / (t1 - t0)}
    return {"train_phase_s": result.metrics["train_phase_s"], "trained_tokens": result.trained_tokens,
            "fed_positions": result.data["fed_positions"], "trainable_params": result.trainable_params,
            "train_loss": result.metrics.get("train_loss"), "steady": steady}


def run_plain(spec: dict) -> dict:
    from bench.plain_peft import plain_train
    from bench.workloads import read_jsonl

    return plain_train({"model_dir": spec["model_dir"], "task": "causal_lm",
                        "train_rows": read_jsonl(spec["train_file"]),
                        "valid_rows": None, "steps": spec["steps"], "batch": spec["batch"], "lr": spec["lr"],
                        "seed": spec["seed"], "max_len": spec["max_len"], "output_dir": spec["output_dir"],
                        "bf16": spec["bf16"], "skip_steps": spec["skip_steps"],
                        "device": "cuda" if spec["bf16"] else "cpu", **LORA})


def child(spec: dict) -> dict:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = run_plain(spec) if spec["side"] == "plain" else run_hubtune(spec)
    if torch.cuda.is_available():
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


# ---------------------------------------------------------------------------------------------
# The parent


def flops_per_token(config, *, trainable: int, mean_context: float) -> float:
    from bench.workloads import param_count

    n = param_count(config)
    return 4 * n + 2 * trainable + 6 * config.num_hidden_layers * config.hidden_size * mean_context


def peak_flops(override: float | None) -> tuple[float | None, str]:
    import torch

    if override:
        return override * 1e12, "given"
    if not torch.cuda.is_available():
        return None, "cpu"
    name = torch.cuda.get_device_name()
    for key, value in PEAK_BF16.items():
        if key in name:
            return value, name
    return None, name


def mean_context(lengths: list[int]) -> float:
    """Mean number of keys a trained token attends to (causal: half its example, on average)."""
    return sum(n * (n + 1) / 2 for n in lengths) / max(sum(lengths), 1)


def run_all(*, size: str, steps: int, batch: int, rows: int, max_len: int, skip: int, variants: list[str],
            peak_tflops: float | None, workdir: Path | None = None) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(workdir or tmp)
        t0 = time.monotonic()
        model_dir = make_llama(tmp / f"llama-{size}", size, device="cuda" if cuda else "cpu",
                               dtype=torch.bfloat16 if cuda else None)
        print(f"built the {size} model in {time.monotonic() - t0:.0f} s", flush=True)
        # Words are single WordPiece tokens here: lengths from 16 to about max_len tokens.
        data = causal_rows(rows, seed=0, min_words=16, max_words=max(17, max_len - 8))
        train_file = write_jsonl(tmp / "train.jsonl", data)
        valid_file = write_jsonl(tmp / "valid.jsonl", causal_rows(32, seed=1, min_words=16,
                                                                  max_words=max(17, max_len - 8)))
        tokenizer = llama_tokenizer()
        config = llama_config(size, vocab_size=len(tokenizer), tokenizer=tokenizer)
        lengths = [min(max_len, 2 + len(tokenizer(r["prompt"] + r["completion"],
                                                  add_special_tokens=False)["input_ids"])) for r in data]
        peak, device = peak_flops(peak_tflops)
        print(f"{size}: {config.num_hidden_layers} layers, hidden {config.hidden_size}; device {device}; "
              f"{steps} steps of batch {batch} ({skip} warm-up steps not counted), max_seq_length {max_len}, "
              f"LoRA r={LORA['r']}, bf16 {cuda}", flush=True)
        results = {}
        for name in variants:
            spec = {**VARIANTS[name], "model_dir": str(model_dir), "train_file": str(train_file),
                    "valid_file": str(valid_file), "steps": steps,
                    "batch": batch, "lr": 2e-4, "seed": 42, "max_len": max_len, "bf16": cuda, "skip_steps": skip,
                    "output_dir": str(tmp / name.replace(" ", "-"))}
            spec.setdefault("packing", False)
            spec.setdefault("gradient_checkpointing", False)
            proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                  text=True, timeout=900)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(f"  {name}: FAILED\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}", flush=True)
                continue
            r = json.loads(lines[-1][len("RESULT "):])
            rate = (r.get("steady") or {}).get("tokens_per_s")
            fpt = flops_per_token(config, trainable=r["trainable_params"], mean_context=mean_context(lengths))
            r["mfu"] = fpt * rate / peak if (peak and rate) else None
            results[name] = r
            base = results.get("plain", {}).get("steady", {}).get("tokens_per_s")
            speedup = f"{rate / base:5.2f}x plain" if base and rate else ""
            mfu = f"MFU {100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "MFU n/a"
            print(f"  {name:20s} {rate or 0:10.0f} tokens/s  {mfu}  {speedup}  "
                  f"(train phase {r['train_phase_s']:.1f} s, {r['trained_tokens']} tokens, "
                  f"{r.get('fed_positions', 0)} positions fed, peak {r.get('peak_gib', '-')} GiB, "
                  f"loss {r.get('train_loss') or 0:.3f})", flush=True)
        return results


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    cuda = torch.cuda.is_available()
    parser.add_argument("--size", choices=["tiny", "small", "1b"], default="1b" if cuda else "tiny")
    parser.add_argument("--steps", type=int, default=40 if cuda else 8)
    parser.add_argument("--skip", type=int, default=5 if cuda else 2, help="warm-up steps not counted")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--max-seq-length", type=int, default=1024 if cuda else 128)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not in the table")
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))))
        return
    run_all(size=args.size, steps=args.steps, batch=args.batch, rows=args.rows, max_len=args.max_seq_length,
            skip=args.skip, variants=args.variants.split(","), peak_tflops=args.peak_tflops)


if __name__ == "__main__":
    main()
