"""Quality with the defaults: hubtune with every hyperparameter "auto" against a plain transformers +
peft script whose learning rate is picked from a grid on the test set (its best value is the reference).

Tasks (bench/quality_tasks.py): binary_imbalanced, multiclass_imbalanced, small, medium (LoRA on the
real all-MiniLM-L6-v2), chat and completion (LoRA on SmolLM2-135M-Instruct). Each has a test set that
training never sees; both sides are scored by the same code (bench/quality_metrics.py): macro-F1 and
accuracy for classification (with the majority class's macro-F1), the mean held-out assistant/completion
token loss for causal tasks.

hubtune runs as the worker does: the request's TrainPlan with resolve_hyperparameters(n_examples = the
training rows less the held-out split) and worker.engine.trainer.train(plan, NullHooks()); the saved
artifact is loaded with load_for_inference and scored. "search off" is the same job with an explicit
training.learning_rate equal to the auto rate (what a learning-rate search inside train() costs and gains).

    python bench/quality.py [--tasks small,chat] [--seeds 0] [--runs plain,auto,search_off] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality_metrics import causal_loss, classification_scores, encode_causal  # noqa: E402
from bench.quality_tasks import TASKS, Task  # noqa: E402
from bench.real_models import minilm_dir, smollm2_dir  # noqa: E402

LORA = {"r": 8, "alpha": 16, "dropout": 0.05}  # hubtune's tuning defaults, used by both sides
CLASSIFICATION_MARGIN = 0.02  # done when: within 0.02 macro-F1 of the plain best ...
MAJORITY_MARGIN = 0.15  # ... and at least this far above the majority class ("well above")
CAUSAL_MARGIN = 0.03  # done when: held-out loss within 3 % of the plain best


def model_dir(task: Task) -> Path:
    return minilm_dir() if task.model == "minilm" else smollm2_dir()


def score(task: Task, model, tokenizer) -> dict:
    max_len = task.plain["max_len"]
    if task.kind == "sequence_classification":
        return classification_scores(model, tokenizer, task.train, task.test, max_len=max_len)
    return causal_loss(model, tokenizer, task.test, max_len=max_len)


def run_plain(task: Task, lr: float, seed: int, work: Path) -> dict:
    from bench.plain_peft import plain_train

    p = task.plain
    steps = p["epochs"] * math.ceil(len(task.train) / p["batch"])
    spec = {"model_dir": str(model_dir(task)), "task": task.kind, "train_rows": task.train, "valid_rows": None,
            "steps": steps, "batch": p["batch"], "lr": lr, "seed": seed, "max_len": p["max_len"],
            "output_dir": str(work / f"plain-{task.name}-{lr}-{seed}"), "device": "cpu", **LORA}
    keep: dict = {}
    began = time.monotonic()
    plain_train(spec, encode_causal=encode_causal if task.kind == "causal_lm" else None, keep=keep)
    seconds = time.monotonic() - began
    return {"lr": lr, "steps": steps, "seconds": round(seconds, 1), **score(task, keep["model"], keep["tokenizer"])}


def hubtune_plan(task: Task, seed: int, work: Path, *, learning_rate: float | None = None):
    """The TrainPlan the worker would build for this request (prepare's rules, every hyperparameter auto)."""
    from hubtune.spec import JobRequest
    from worker.engine.data import load_examples
    from worker.engine.evaluate import split_record
    from worker.engine.hparams import model_parameters, resolve_hyperparameters
    from worker.engine.plan import TrainPlan

    folder = Path(tempfile.mkdtemp(prefix=f"hubtune-{task.name}-", dir=work))
    train_file = folder / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in task.train))
    training = {"max_seq_length": task.plain["max_len"]}
    if learning_rate is not None:
        training["learning_rate"] = learning_rate
    request = JobRequest.model_validate({"model": "bench", "training_file": "file-bench", "seed": seed,
                                         "task": task.kind, "training": training})
    examples = load_examples(train_file, task=task.kind, param="training_file")
    split = split_record(examples, None, fraction=request.training.validation_split, seed=seed)
    held_out = split["examples"] if split["source"] == "held_out" else 0
    hyper = resolve_hyperparameters(n_examples=len(examples.rows) - held_out, task=task.kind,
                                    tuning_type=request.tuning.type, requested=request.effective_hyperparameters(),
                                    training=request.training, n_params=model_parameters(model_dir(task), task=task.kind))
    return TrainPlan.in_folder(folder, task=task.kind, model_dir=model_dir(task), train_file=train_file, seed=seed,
                               tuning=request.tuning, training=request.training, hyperparameters=hyper)


def run_hubtune(task: Task, seed: int, work: Path, *, learning_rate: float | None = None) -> dict:
    from worker.engine.trainer import NullHooks, load_for_inference, train

    plan = hubtune_plan(task, seed, work, learning_rate=learning_rate)
    began = time.monotonic()
    result = train(plan, NullHooks())
    seconds = time.monotonic() - began
    model, tokenizer = load_for_inference(model_dir=plan.model_dir, adapter_dir=plan.output_dir, task=task.kind)
    hp = {k: v for k, v in plan.hyperparameters.items()}
    search = result.search or {}
    return {"hyperparameters": hp, "steps": result.steps, "seconds": round(seconds, 1),
            "search": {k: search.get(k) for k in ("ran", "reason", "trials", "chosen", "seconds",
                                                  "slice_examples", "trial_steps", "planned_steps")},
            **score(task, model, tokenizer)}


def verdict(task: Task, plain_best: dict, auto: dict) -> str:
    if task.kind == "sequence_classification":
        gap = plain_best["macro_f1"] - auto["macro_f1"]
        lift = auto["macro_f1"] - auto["majority_macro_f1"]
        ok = gap <= CLASSIFICATION_MARGIN and lift >= MAJORITY_MARGIN
        return (f"{'MET' if ok else 'NOT MET'}: auto macro-F1 {auto['macro_f1']:.3f} vs plain best "
                f"{plain_best['macro_f1']:.3f} (gap {gap:+.3f}, limit {CLASSIFICATION_MARGIN}), "
                f"{lift:+.3f} over majority")
    rel = auto["test_loss"] / plain_best["test_loss"] - 1
    ok = rel <= CAUSAL_MARGIN
    return (f"{'MET' if ok else 'NOT MET'}: auto loss {auto['test_loss']:.4f} vs plain best "
            f"{plain_best['test_loss']:.4f} ({rel:+.1%}, limit +{CAUSAL_MARGIN:.0%})")


def _metric(task: Task, r: dict) -> str:
    if task.kind == "sequence_classification":
        return f"F1 {r['macro_f1']:.3f} acc {r['accuracy']:.3f}"
    return f"loss {r['test_loss']:.4f}"


def _best(task: Task, grid: list[dict]) -> dict:
    if task.kind == "sequence_classification":
        return max(grid, key=lambda r: r["macro_f1"])
    return min(grid, key=lambda r: r["test_loss"])


def run_task(name: str, seed: int, runs: set[str], work: Path, lrs: list[float] | None) -> dict:
    task = TASKS[name](seed)
    out: dict = {"task": name, "seed": seed, "kind": task.kind, "train": len(task.train), "test": len(task.test),
                 "plain_settings": {k: v for k, v in task.plain.items() if k != "grid"}}
    if "plain" in runs:
        out["plain_grid"] = []
        for lr in lrs or task.plain["grid"]:
            r = run_plain(task, lr, seed, work)
            print(f"  {name} seed {seed} plain lr {lr:g}: {_metric(task, r)} ({r['seconds']} s)", flush=True)
            out["plain_grid"].append(r)
        out["plain_best"] = _best(task, out["plain_grid"])
    if "auto" in runs:
        out["auto"] = run_hubtune(task, seed, work)
        print(f"  {name} seed {seed} hubtune auto {out['auto']['hyperparameters']}: "
              f"{_metric(task, out['auto'])} ({out['auto']['seconds']} s)", flush=True)
        print(f"    search: {out['auto']['search']}", flush=True)
    if "search_off" in runs:
        lr = hubtune_plan(task, seed, work).hyperparameters["learning_rate"]
        out["search_off"] = run_hubtune(task, seed, work, learning_rate=lr)
        print(f"  {name} seed {seed} hubtune search off (lr {lr:g}): {_metric(task, out['search_off'])} "
              f"({out['search_off']['seconds']} s)", flush=True)
    if "plain_best" in out and "auto" in out:
        out["verdict"] = verdict(task, out["plain_best"], out["auto"])
    return out


def table(results: list[dict]) -> str:
    head = ("| task | seed | plain best (lr) | plain grid | hubtune auto (lr, epochs, batch) | search off | "
            "majority F1 | seconds plain best / auto / off |")
    lines = [head, "|" + "---|" * 8]
    for r in results:
        cls = r["kind"] == "sequence_classification"
        key = "macro_f1" if cls else "test_loss"
        fmt = (lambda x: f"{x:.3f}") if cls else (lambda x: f"{x:.4f}")
        best = r.get("plain_best")
        grid = " / ".join(f"{g['lr']:g}: {fmt(g[key])}" for g in r.get("plain_grid", []))
        auto, off = r.get("auto"), r.get("search_off")
        auto_s = (f"{fmt(auto[key])} ({auto['hyperparameters']['learning_rate']:g}, "
                  f"{auto['hyperparameters']['n_epochs']}, {auto['hyperparameters']['batch_size']})") if auto else "-"
        majority = f"{(auto or best or {}).get('majority_macro_f1', 0):.3f}" if cls else "-"
        secs = " / ".join(str(x["seconds"]) if x else "-" for x in (best, auto, off))
        lines.append(f"| {r['task']} | {r['seed']} | {fmt(best[key]) + ' (' + format(best['lr'], 'g') + ')' if best else '-'} "
                     f"| {grid or '-'} | {auto_s} | {fmt(off[key]) if off else '-'} | {majority} | {secs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--runs", default="plain,auto", help="comma-separated: plain, auto, search_off")
    p.add_argument("--lrs", default=None, help="the plain script's grid instead of each task's (comma-separated)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    names = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        p.error(f"--tasks: unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    runs = set(args.runs.split(","))
    if runs - {"plain", "auto", "search_off"}:
        p.error(f"--runs: unknown {', '.join(sorted(runs - {'plain', 'auto', 'search_off'}))}")
    seeds = [int(s) for s in args.seeds.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")] if args.lrs else None
    began = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="hubtune-quality-") as tmp:
        for seed in seeds:
            for name in names:
                results.append(run_task(name, seed, runs, Path(tmp), lrs))
                if args.json:  # written after every task: a long run that stops keeps what it measured
                    Path(args.json).write_text(json.dumps(
                        {"machine": platform.processor() or platform.machine(), "results": results}, indent=1))
    print()
    print(table(results))
    for r in results:
        if "verdict" in r:
            print(f"{r['task']} seed {r['seed']}: {r['verdict']}")
    print(f"total {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
