"""Assertions shared by the end-to-end tests: the loss fell, the adapter reproduces the worker's model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def losses(events: list[dict]) -> list[float]:
    return [e["data"]["train_loss"] for e in events
            if e["type"] == "metrics" and e["data"] and e["data"].get("train_loss") is not None]


def assert_loss_fell(events: list[dict]) -> None:
    curve = losses(events)
    assert len(curve) >= 6, curve
    head, tail = np.mean(curve[:3]), np.mean(curve[-3:])
    assert tail < 0.8 * head, f"loss did not fall: first {curve[:3]}, last {curve[-3:]}"


def assert_same_outputs(reference: dict, loaded: dict) -> None:
    assert loaded["inputs"] == reference["inputs"]
    np.testing.assert_allclose(np.array(loaded["logits"]), np.array(reference["logits"]), atol=1e-4)
    if "token_ids" in reference:
        assert loaded["token_ids"] == reference["token_ids"]


def outputs_from_local_adapter(*, model_dir: Path, adapter_dir: Path, task: str, inputs: list[str]) -> dict:
    from worker.engine.trainer import load_for_inference, reference_outputs

    model, tokenizer = load_for_inference(model_dir=model_dir, adapter_dir=adapter_dir, task=task)
    return reference_outputs(model, tokenizer, task=task, inputs=inputs)


def outputs_from_hub_by_repo_id(*, endpoint: str, token: str | None, base: str, base_rev: str, repo_id: str,
                                revision: str, task: str, inputs: list[str], cache: Path) -> dict:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_OFFLINE": "0"}
    if token:
        env["HF_TOKEN"] = token
    out = subprocess.run(
        [sys.executable, "-m", "tests.e2e.load_from_hub", base, base_rev, repo_id, revision, task, json.dumps(inputs)],
        env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
