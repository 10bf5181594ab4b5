"""The engine's options end to end in embedded mode (`hubtune up`): a CSV classification job with
class weights and a goal, trained by two processes under torch.distributed that the worker task
launches, reports its baseline, evaluation and world size; options that do not fit fail at prepare
naming the field."""

from __future__ import annotations

import csv
import random

import pytest

from testkit.tiny_models import FILLER, NEGATIVE, POSITIVE, make_tiny_bert
from testkit.stack import Stack, all_events, upload, wait_for

pytestmark = pytest.mark.e2e

EVALUATION_KEYS = {"split", "primary_metric", "base", "tuned", "base_kind", "majority_baseline", "beat_baseline",
                   "goal", "samples"}


def _embedded_env(root) -> dict[str, str]:
    return {"HUBTUNE_DATABASE_URL": "", "HUBTUNE_BROKER_URL": "", "HUBTUNE_HUB_BACKEND": "local",
            "HUBTUNE_HUB_DIR": "", "HUBTUNE_DATA_DIR": str(root / "data")}


def write_csv(path, n_positive: int, n_negative: int, *, seed: int = 0):
    rng = random.Random(seed)
    rows = []
    for i in range(n_positive + n_negative):
        positive = i < n_positive
        words = rng.sample(FILLER, 4)
        words.insert(rng.randrange(5), rng.choice(POSITIVE if positive else NEGATIVE))
        rows.append((" ".join(words), "positive" if positive else "negative"))
    rng.shuffle(rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def test_csv_class_weights_goal_and_two_processes(tmp_path):
    stack = Stack(tmp_path, _embedded_env(tmp_path))
    stack.run("hub", "import", str(make_tiny_bert(tmp_path / "tiny-bert")), "tiny/bert")
    stack.spawn("up", "up", "--port", str(stack.port))
    try:
        stack.wait_healthy(timeout=120)
        client = stack.client((tmp_path / "data" / "admin.key").read_text().strip())
        train = upload(client, write_csv(tmp_path / "train.csv", 24, 40))

        def submit(**training):
            return client.post("/fine_tuning/jobs", json={
                "model": "tiny/bert", "training_file": train, "seed": 3,
                "training": {"learning_rate": 0.01, "max_seq_length": 32, **training},
                "hyperparameters": {"n_epochs": 8, "batch_size": 4},
            }).json()

        bad_goal = submit(goal={"metric": "bleu", "min": 1})
        bad_weights = submit(class_weights={"positive": 2, "neutral": 3})
        job = submit(class_weights="balanced", validation_split=0.25, n_gpus=2,
                     goal={"metric": "macro_f1", "min": 0.5})
        job = wait_for(client, job["id"], stack=stack)
        assert job["status"] == "succeeded", (job["error"], stack.logs())
        for failed, param in ((bad_goal, "training.goal.metric"), (bad_weights, "training.class_weights.neutral")):
            failed = wait_for(client, failed["id"], stack=stack)
            assert failed["status"] == "failed" and failed["error"]["param"] == param, failed["error"]
        events = all_events(client, job["id"])
    finally:
        stack.stop()

    evaluation = job["result"]["evaluation"]
    print("e2e evaluation:", evaluation)
    assert set(evaluation) == EVALUATION_KEYS
    assert {k: evaluation["split"][k] for k in ("source", "examples", "fraction")} == {
        "source": "held_out", "examples": 16, "fraction": 0.25}
    assert evaluation["split"]["reliable"] is False  # 16 < 20 held-out examples (worker/engine/holdout.py)
    assert evaluation["primary_metric"] == "macro_f1" and evaluation["base_kind"] == "linear_probe"
    assert evaluation["tuned"]["macro_f1"] > evaluation["majority_baseline"]["macro_f1"]
    assert evaluation["goal"]["metric"] == "macro_f1" and isinstance(evaluation["goal"]["met"], bool)
    assert job["result"]["world_size"] == 2

    messages = [e["message"] for e in events]
    order = {name: next(i for i, m in enumerate(messages) if m.startswith(name))
             for name in ("Data report", "Baseline", "Training started", "Evaluation")}
    assert order["Data report"] < order["Baseline"] < order["Training started"] < order["Evaluation"]
    report = next(e for e in events if e["message"].startswith("Data report"))["data"]["data_report"]
    assert report["evaluation_split"]["source"] == "held_out" and len(report["evaluation_split"]["lines"]) == 16
    baseline = next(e for e in events if e["message"].startswith("Baseline"))["data"]
    assert baseline["base"] == evaluation["base"]
    assert sum(1 for e in events if e["type"] == "metrics") > 0
