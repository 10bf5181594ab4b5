"""The warm worker: the training stack is imported once per task process and frozen out of the cyclic
GC, so the full collection Trainer.train() forces at the start of every job skips it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_warm_up_imports_the_training_stack_and_freezes_it():
    result = _run("""
        import gc, json, sys
        from worker.warm import warm_up
        assert "torch" not in sys.modules
        warm_up()
        tracked_after = len(gc.get_objects())  # what a full collection still walks
        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle made after the freeze is still garbage-collected
        del a, b
        print(json.dumps({"modules": [m for m in ("torch", "transformers", "peft", "worker.engine.trainer")
                                      if m in sys.modules],
                          "frozen": gc.get_freeze_count(), "tracked": tracked_after,
                          "collected": gc.collect()}))
    """)
    assert result["modules"] == ["torch", "transformers", "peft", "worker.engine.trainer"]
    assert result["frozen"] > 100_000  # torch + transformers + peft + the worker
    assert result["tracked"] < result["frozen"] / 20  # a collection no longer walks the imports
    assert result["collected"] >= 2


def test_freeze_is_done_once_per_process():
    result = _run("""
        import gc, json
        from worker.engine.runtime import freeze_imports
        first = freeze_imports()
        kept = [[i] for i in range(50_000)]  # a job's objects: must not be frozen by a second call
        second = freeze_imports()
        print(json.dumps({"first": first, "second": second}))
    """)
    assert result["first"] == result["second"]


def test_a_worker_without_torch_stays_cold():
    result = _run("""
        import gc, json, sys
        sys.modules["torch"] = None  # as in a publish-only image: `import torch` raises ImportError
        from worker.warm import warm_up
        warm_up()
        print(json.dumps({"frozen": gc.get_freeze_count()}))
    """)
    assert result["frozen"] == 0


def test_a_forked_task_process_inherits_the_warm_stack_and_computes():
    # What the worker's pool does: warm up in the main process, fork, train in the child. The child
    # must see the frozen imports and run torch's thread pool (none may exist before the fork).
    result = _run("""
        import gc, json, os
        from worker.warm import warm_up
        warm_up()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            import torch
            x = torch.randn(512, 512)
            value = float((x @ x).sum())  # large enough for the intra-op pool
            os.write(write, json.dumps({"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects()),
                                        "threads": torch.get_num_threads(), "finite": value == value}).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print(os.read(read, 4096).decode())
    """)
    assert result["frozen"] > 100_000 and result["tracked"] < result["frozen"] / 20
    assert result["finite"] and result["threads"] >= 1
