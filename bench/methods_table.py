"""Every tuning method x task trained end to end by the engine on tiny models built from a config:
trainable/total parameters and the primary validation metric of the base model, the majority-class
baseline (classification) and the fine-tuned model. Prints a Markdown table.

    python bench/methods_table.py [--steps-epochs 6]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hubtune.spec import Hyperparameters, Training, Tuning  # noqa: E402
from testkit.tiny_models import (  # noqa: E402
    make_tiny_bert, make_tiny_llama, write_classification_jsonl, write_completion_jsonl,
)
from worker.engine.hparams import resolve_hyperparameters  # noqa: E402
from worker.engine.plan import NullHooks, TrainPlan  # noqa: E402
from worker.engine.trainer import train  # noqa: E402

CLS, LM = "sequence_classification", "causal_lm"
CASES = [
    ("lora", Tuning(r=8, alpha=16, dropout=0.0), 1e-2, (CLS, LM)),
    ("lora+dora+rslora", Tuning(r=8, alpha=16, dropout=0.0, use_dora=True, use_rslora=True), 1e-2, (CLS,)),
    ("adapter", Tuning(type="adapter", bottleneck_size=16), 1e-2, (CLS, LM)),
    ("full", Tuning(type="full"), 1e-3, (CLS, LM)),
    ("ia3", Tuning(type="ia3"), 3e-2, (CLS, LM)),
    ("loha", Tuning(type="loha", options={"r": 4, "alpha": 8}), 2e-2, (CLS, LM)),
    ("lokr", Tuning(type="lokr", options={"r": 4, "alpha": 8}), 2e-2, (CLS, LM)),
    ("vera", Tuning(type="vera", options={"r": 16}), 5e-2, (CLS,)),
]


def run(tmp: Path, *, task: str, model_dir: Path, files: dict, tuning: Tuning, lr: float, epochs: int) -> dict:
    training = Training(learning_rate=lr, logging_steps=5, save_steps=100000)
    hp = resolve_hyperparameters(n_examples=64, task=task, tuning_type=tuning.type,
                                 requested=Hyperparameters(n_epochs=epochs, batch_size=8), training=training)
    plan = TrainPlan.in_folder(tmp, task=task, model_dir=model_dir, train_file=files[task][0],
                               valid_file=files[task][1], seed=0, tuning=tuning, training=training, hyperparameters=hp)
    start = time.perf_counter()
    result = train(plan, NullHooks())
    return {"result": result, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        models = {CLS: make_tiny_bert(tmp / "bert"), LM: make_tiny_llama(tmp / "llama")}
        files = {
            CLS: (write_classification_jsonl(tmp / "cls-train.jsonl", 64, seed=1),
                  write_classification_jsonl(tmp / "cls-valid.jsonl", 32, seed=2)),
            LM: (write_completion_jsonl(tmp / "lm-train.jsonl", 64, seed=1),
                 write_completion_jsonl(tmp / "lm-valid.jsonl", 32, seed=2)),
        }
        print("| method | task | trainable / total params | metric | base | majority | fine-tuned | beat baseline | s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for method, tuning, lr, tasks in CASES:
            for task in tasks:
                out = run(tmp / f"{method}-{task}", task=task, model_dir=models[task], files=files,
                          tuning=tuning, lr=lr, epochs=args.epochs)
                r, ev = out["result"], out["result"].evaluation
                metric = ev["primary_metric"]
                majority = (ev.get("majority_baseline") or {}).get(metric)
                print(f"| {method} | {task} | {r.trainable_params:,} / {r.total_params:,} | {metric} | "
                      f"{ev['base'][metric]:.3f} | {'' if majority is None else f'{majority:.3f}'} | "
                      f"{ev['tuned'][metric]:.3f} | {ev['beat_baseline']} | {out['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
