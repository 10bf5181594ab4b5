"""The memory estimator (hubtune/estimator.py) beside the measured peak of real training steps.

For each configuration a fresh Python process builds the model as the worker does (load_base_model +
the tuning method), runs two AdamW steps on random tokens, and reports its peak:

- with CUDA: ``torch.cuda.max_memory_allocated`` (bf16 autocast, as the worker trains on a GPU); the
  estimate's ``RUNTIME_BYTES`` (CUDA context) is not part of what the allocator reports;
- on CPU: the growth of the process's peak RSS (``ru_maxrss``) from just before the model is loaded to
  after the steps (float32), which includes the allocator's and the kernels' own buffers.

Usage: python bench/memory_estimator.py [--only NAME_SUBSTRING]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name, model, task, tuning, batch, seq, gradient checkpointing
CONFIGS = [
    ("tiny-bert lora b8 s64", "tiny_bert", "sequence_classification", {"type": "lora"}, 8, 64, False),
    ("tiny-bert full b8 s64", "tiny_bert", "sequence_classification", {"type": "full"}, 8, 64, False),
    ("tiny-llama lora b8 s64", "tiny_llama", "causal_lm", {"type": "lora"}, 8, 64, False),
    ("tiny-llama full b8 s64", "tiny_llama", "causal_lm", {"type": "full"}, 8, 64, False),
    ("tiny-llama full b32 s128", "tiny_llama", "causal_lm", {"type": "full"}, 32, 128, False),
    ("minilm lora b16 s128", "minilm", "sequence_classification", {"type": "lora"}, 16, 128, False),
    ("minilm full b16 s128", "minilm", "sequence_classification", {"type": "full"}, 16, 128, False),
    ("minilm adapter b16 s128", "minilm", "sequence_classification", {"type": "adapter"}, 16, 128, False),
    ("minilm full b64 s256", "minilm", "sequence_classification", {"type": "full"}, 64, 256, False),
    ("minilm full b64 s256 gc", "minilm", "sequence_classification", {"type": "full"}, 64, 256, True),
]
LABELS = ["a", "b", "c"]


def _rss_peak_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def measure(spec: dict) -> dict:
    """Runs in the child process: build, two steps, peak."""
    import torch

    from hubtune.spec import Tuning
    from worker.engine.methods import get_method
    from worker.engine.trainer import load_base_model

    cuda = torch.cuda.is_available()
    model_dir, task, tuning = Path(spec["model_dir"]), spec["task"], Tuning(**spec["tuning"])
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    ids = torch.randint(5, vocab, (spec["batch"], spec["seq"]))
    labels = torch.randint(0, len(LABELS), (spec["batch"],)) if task == "sequence_classification" else ids.clone()
    if cuda:
        ids, labels = ids.cuda(), labels.cuda()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_peak_bytes()

    model, new = load_base_model(model_dir, task=task, labels=LABELS if task == "sequence_classification" else None)
    model = get_method(tuning.type).build(model, tuning, task=task, modules_to_save=new)
    if spec["gc"]:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cuda:
        model = model.cuda()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for _ in range(2):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep the gradients allocated, as the estimate counts them
    peak = (torch.cuda.max_memory_allocated() if cuda else _rss_peak_bytes()) - before
    return {"peak_bytes": peak, "device": torch.cuda.get_device_name() if cuda else "cpu"}


def estimate_for(spec: dict, *, cuda: bool):
    from hubtune.estimator import estimate
    from hubtune.spec import Tuning

    config = json.loads((Path(spec["model_dir"]) / "config.json").read_text())
    return estimate(
        config=config, tuning=Tuning(**spec["tuning"]), task=spec["task"], num_labels=len(LABELS),
        precision="bf16" if cuda else "fp32", batch_size=spec["batch"], seq_len=spec["seq"],
        gradient_checkpointing=spec["gc"],
    )


def model_dirs(tmp: Path) -> dict[str, Path]:
    from testkit.tiny_models import make_tiny_bert, make_tiny_llama, minilm_dir

    return {"tiny_bert": make_tiny_bert(tmp / "tiny-bert"), "tiny_llama": make_tiny_llama(tmp / "tiny-llama"),
            "minilm": minilm_dir()}


def mib(n: int) -> str:
    return f"{n / 2**20:9.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return

    import torch

    from hubtune.estimator import OVERHEAD_FRACTION, RUNTIME_BYTES

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = model_dirs(Path(tmp))
        device = torch.cuda.get_device_name() if cuda else f"cpu ({os.cpu_count()} cores), peak RSS growth"
        print(f"device: {device}; precision {'bf16 autocast' if cuda else 'fp32'}; "
              f"estimate overhead = {OVERHEAD_FRACTION:.0%} of the parts + {RUNTIME_BYTES >> 20} MiB runtime")
        print(f"{'configuration':26} {'params':>11} {'trainable':>10} {'weights':>9} {'grads':>9} {'optim':>9} "
              f"{'activ':>9} {'parts':>9} {'total':>9} {'measured':>9} {'meas/parts':>10} {'meas/total':>10}")
        print(f"{'':26} {'':>11} {'':>10} {'MiB':>9} {'MiB':>9} {'MiB':>9} {'MiB':>9} {'MiB':>9} {'MiB':>9} {'MiB':>9}")
        for name, model, task, tuning, batch, seq, gc in CONFIGS:
            if args.only not in name:
                continue
            spec = {"model_dir": str(dirs[model]), "task": task, "tuning": tuning, "batch": batch, "seq": seq, "gc": gc}
            est = estimate_for(spec, cuda=cuda)
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                 text=True, cwd=ROOT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            if out.returncode != 0:
                print(f"{name:26} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            peak = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
            parts = est.total_bytes - est.overhead_bytes
            print(f"{name:26} {est.params_total:>11,} {est.params_trainable:>10,} {mib(est.weights_bytes)} "
                  f"{mib(est.gradients_bytes)} {mib(est.optimizer_bytes)} {mib(est.activations_bytes)} {mib(parts)} "
                  f"{mib(est.total_bytes)} {mib(peak)} {peak / parts:10.2f} {peak / est.total_bytes:10.2f}")


if __name__ == "__main__":
    main()
