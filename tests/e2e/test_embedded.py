"""End to end in embedded mode: `hubtune up` alone — SQLite, the file-system queue, the local hub,
the server and its two workers — with no service installed."""

from __future__ import annotations

import subprocess
import time

import pytest

from plugin import LocalHub
from tests.e2e.checks import assert_loss_fell, assert_same_outputs, outputs_from_local_adapter
from testkit.tiny_models import make_tiny_bert, write_classification_jsonl
from testkit.stack import Stack, all_events, hubtune_cmd, upload, wait_for

pytestmark = pytest.mark.e2e


def _embedded_env(root) -> dict[str, str]:
    # Whatever the developer's shell says, embedded mode means the defaults under the data dir.
    return {"HUBTUNE_DATABASE_URL": "", "HUBTUNE_BROKER_URL": "", "HUBTUNE_HUB_BACKEND": "local",
            "HUBTUNE_HUB_DIR": "", "HUBTUNE_DATA_DIR": str(root / "data")}


def test_hubtune_up_runs_a_job_end_to_end(tmp_path):
    stack = Stack(tmp_path, _embedded_env(tmp_path))
    stack.run("hub", "import", str(make_tiny_bert(tmp_path / "tiny-bert")), "tiny/bert")
    stack.spawn("up", "up", "--port", str(stack.port))
    try:
        stack.wait_healthy(timeout=120)
        key_file = tmp_path / "data" / "admin.key"
        assert key_file.stat().st_mode & 0o077 == 0, "the admin key must be readable by its user only"
        client = stack.client(key_file.read_text().strip())
        train = upload(client, write_classification_jsonl(tmp_path / "train.jsonl", n=64, seed=1))
        job = client.post("/fine_tuning/jobs", json={
            "model": "tiny/bert", "training_file": train, "task": "sequence_classification", "seed": 3,
            "training": {"learning_rate": 0.01, "max_seq_length": 32},
            "hyperparameters": {"n_epochs": 4, "batch_size": 8}, "hub": {"repo_id": "admin/tiny-cls"},
        }).json()
        job = wait_for(client, job["id"], stack=stack)
        assert job["status"] == "succeeded", (job["error"], stack.logs())
        assert_loss_fell(all_events(client, job["id"]))
        again = wait_for(client, client.post("/fine_tuning/jobs", json={
            "model": "tiny/bert", "training_file": train, "task": "sequence_classification",
            "training": {"max_steps": 2, "max_seq_length": 32}, "hub": {"repo_id": "admin/tiny-cls-2"},
        }).json()["id"], stack=stack)
        assert again["status"] == "succeeded", (again["error"], stack.logs())
        # Two workers, as compose.yaml has them: prepare/publish, and training in a fresh process per job.
        workers = {tuple(w["queues"]) for w in client.get("/workers").json()["data"]}
        assert workers == {("prepare", "publish"), ("train",)}
        assert _trained_in(client, job["id"]) != _trained_in(client, again["id"])
    finally:
        stack.stop()
    # Everything lives under the data dir: the SQLite database, the queue folder and the local hub.
    data = tmp_path / "data"
    assert (data / "hubtune.db").is_file() and (data / "queue" / "messages").is_dir()
    hub = LocalHub(data / "hub")
    repo_id, commit = job["fine_tuned_model"].split("@")
    adapter = hub.snapshot(repo_id, revision=commit)
    reference = job["result"]["reference"]
    loaded = outputs_from_local_adapter(model_dir=hub.snapshot("tiny/bert", revision=job["model_revision"]),
                                        adapter_dir=adapter, task="sequence_classification",
                                        inputs=reference["inputs"])
    assert_same_outputs(reference, loaded)


def _trained_in(client, job_id: str) -> str:
    """The task process that trained the job ("host:pid"), from its start event."""
    prefix = "Fine-tuning job started on "
    return next(e["message"][len(prefix):] for e in all_events(client, job_id) if e["message"].startswith(prefix))


def test_readme_demo_on_real_minilm(tmp_path):
    """The README's first command: `hubtune up --demo` fine-tunes the real all-MiniLM-L6-v2."""
    start = time.monotonic()
    out = subprocess.run(
        hubtune_cmd("--data-dir", str(tmp_path / "data"), "up", "--port", str(Stack(tmp_path, {}).port),
                    "--demo", "--exit-after-demo"),
        env={**Stack(tmp_path, _embedded_env(tmp_path)).env}, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "imported sentence-transformers/all-MiniLM-L6-v2" in out.stdout
    assert "status: succeeded" in out.stdout
    assert "adapter: admin/all-MiniLM-L6-v2-tickets@" in out.stdout
    assert "No hostname was supplied" not in out.stdout + out.stderr  # kombu's noise in the demo's output
    # The workers' output (Celery's banners, its warning about running as root) goes to their log
    # files, which the banner names, not into the demo's progress output.
    console = out.stdout + out.stderr
    for noise in ("[queues]", "cpu@", "train@", "superuser", "Warm shutdown"):
        assert noise not in console, (noise, console[-4000:])
    logs = tmp_path / "data" / "logs"
    assert f"worker logs in {logs}" in out.stdout
    for name in ("worker-cpu", "worker-gpu"):
        assert "[queues]" in (logs / f"{name}.log").read_text()  # Celery's banner, kept there
    print(f"demo took {time.monotonic() - start:.0f}s")
