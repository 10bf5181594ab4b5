"""Issue 18 §3 end to end: a job with an MLflow integration, run by real server and Celery worker
processes on PostgreSQL + Redis, shows its run, params and metrics in a real MLflow tracking server
(read back with mlflow's own client); its TensorBoard event files are in the published artifact; a
paused and resumed job, and a job whose worker was SIGKILLed and replaced, continue the same run."""

from __future__ import annotations

import time

import pytest

from testkit.faults import FAST
from testkit.mlflowserver import MlflowServer
from testkit.services import postgres_database, redis_url
from testkit.stack import Stack, all_events, kill_group, upload, wait_for
from testkit.tiny_models import make_tiny_bert, write_classification_jsonl

pytestmark = pytest.mark.e2e
REDIS_DB = 9  # other e2e modules use 11-14


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking-e2e")
    mlflow = MlflowServer(root / "mlflow").start()
    try:
        with postgres_database("hubtune_track") as db_url:
            stack = Stack(root, {
                "HUBTUNE_DATABASE_URL": db_url, "HUBTUNE_BROKER_URL": redis_url(REDIS_DB),
                "HUBTUNE_HUB_BACKEND": "local", "HUBTUNE_MLFLOW_TRACKING_URI": mlflow.uri,
                **FAST,  # short leases and a fast sweeper: a killed worker's job is re-queued in seconds
            })
            stack.run("hub", "import", str(make_tiny_bert(root / "tiny-bert")), "tiny/bert")
            stack.start()
            key = stack.run("keys", "create", "--name", "alice").strip()
            try:
                yield {"stack": stack, "mlflow": mlflow, "client": stack.client(key), "root": root,
                       "db_url": db_url}
            finally:
                stack.stop()
    finally:
        mlflow.close()


def _create(env, name: str, **body) -> dict:
    client = env["client"]
    train = upload(client, write_classification_jsonl(env["root"] / f"{name}.jsonl", n=48, seed=1))
    valid = upload(client, write_classification_jsonl(env["root"] / f"{name}-valid.jsonl", n=16, seed=2))
    request = {"model": "tiny/bert", "training_file": train, "validation_file": valid, "seed": 3,
               "task": "sequence_classification", "training": {"learning_rate": 0.01, "max_seq_length": 32},
               "hyperparameters": {"n_epochs": 2, "batch_size": 8}, **body}
    response = client.post("/fine_tuning/jobs", json=request)
    assert response.status_code == 200, response.text
    return response.json()


def _run_id(events: list[dict]) -> str:
    ids = {e["data"]["mlflow_run_id"] for e in events if (e["data"] or {}).get("mlflow_run_id")}
    assert len(ids) == 1, [e["message"] for e in events]
    return ids.pop()


def _series(client, job_id: str, name: str) -> dict[int, float]:
    points = client.get(f"/fine_tuning/jobs/{job_id}/metrics", params={"limit": 10000}).json()["data"]
    return {p["step"]: p["data"][name] for p in points if name in p["data"]}


def test_mlflow_run_has_the_jobs_params_and_metrics_and_tensorboard_files_are_in_the_artifact(env):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    client, stack = env["client"], env["stack"]
    job = _create(env, "tracked", metadata={"team": "support"}, integrations=[
        {"type": "mlflow", "mlflow": {"experiment_name": "tickets-e2e", "run_name": "first try"}},
        {"type": "tensorboard"}])
    assert [i["type"] for i in job["integrations"]] == ["mlflow", "tensorboard"]
    job = wait_for(client, job["id"], stack=stack)
    assert job["status"] == "succeeded", (job["error"], stack.logs())
    events = all_events(client, job["id"])
    assert not [e for e in events if e["level"] == "warn" and "tracking" in e["message"]], events

    mlflow = MlflowClient(env["mlflow"].uri)
    run = mlflow.get_run(_run_id(events))
    experiment = mlflow.get_experiment_by_name("tickets-e2e")
    assert run.info.experiment_id == experiment.experiment_id
    assert run.info.run_name == "first try" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["model"] == "tiny/bert" and params["task"] == "sequence_classification"
    assert params["hyperparameters.n_epochs"] == "2" and params["hyperparameters.batch_size"] == "8"
    assert params["tuning.type"] == "lora" and params["tuning.r"] == "8"
    assert params["training.learning_rate"] == "0.01" and params["training.max_seq_length"] == "32"
    assert params["seed"] == "3"
    assert run.data.tags["hubtune.job_id"] == job["id"] and run.data.tags["metadata.team"] == "support"
    # Every step the job logged, at its step, with the job's values.
    train_loss = _series(client, job["id"], "train_loss")
    assert len(train_loss) >= 6
    history = {m.step: m.value for m in mlflow.get_metric_history(run.info.run_id, "train_loss")}
    assert history.keys() == train_loss.keys()
    assert all(history[s] == pytest.approx(v) for s, v in train_loss.items())
    valid_loss = _series(client, job["id"], "valid_loss")
    assert valid_loss and {m.step for m in mlflow.get_metric_history(run.info.run_id, "valid_loss")} == set(valid_loss)
    evaluation = job["result"]["evaluation"]
    metric = evaluation["primary_metric"]
    assert run.data.metrics[f"eval/tuned_{metric}"] == pytest.approx(evaluation["tuned"][metric])
    # Nothing of the server's internals in what the run carries.
    assert not any(str(env["root"]) in value for value in (*params.values(), *run.data.tags.values()))

    # TensorBoard's event files went into the artifact the hub repo received, with the same curve.
    repo_id, commit = job["fine_tuned_model"].split("@")
    from plugin import LocalHub

    snapshot = LocalHub(env["root"] / "data" / "hub").snapshot(repo_id, revision=commit)
    runs = list(snapshot.glob(f"runs/{job['id']}/events.out.tfevents.*"))
    assert runs, sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*"))
    events_file = EventAccumulator(str(runs[0].parent)).Reload()
    scalars = {e.step: e.value for e in events_file.Scalars("train/loss")}
    assert scalars.keys() == train_loss.keys()
    assert all(scalars[s] == pytest.approx(v) for s, v in train_loss.items())
    assert "valid/loss" in events_file.Tags()["scalars"]


def _long_job(env, name: str, **training) -> dict:
    """A job that trains for a while with an MLflow run, returned once it has logged step 4."""
    client, stack = env["client"], env["stack"]
    job = _create(env, name, training={"max_steps": 60, "max_seq_length": 32, "learning_rate": 0.01, **training},
                  hyperparameters={"batch_size": 4}, validation_file=None,
                  integrations=[{"type": "mlflow", "mlflow": {"experiment_name": "tickets-e2e"}}])
    deadline = time.monotonic() + 300
    while max(_series(client, job["id"], "train_loss") or [0]) < 4:
        assert time.monotonic() < deadline and client.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] in (
            "validating_files", "queued", "running"), stack.logs()
        time.sleep(0.2)
    return job


def _one_finished_run_with_every_step(env, job: dict) -> None:
    from mlflow import MlflowClient

    client = env["client"]
    events = all_events(client, job["id"])
    assert any(e["message"].startswith("Resuming from checkpoint-") for e in events)
    assert any(e["message"].endswith("continues") for e in events)
    mlflow = MlflowClient(env["mlflow"].uri)
    run_id = _run_id(events)  # one run for every attempt
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("tickets-e2e").experiment_id],
                              filter_string=f"tags.`hubtune.job_id` = '{job['id']}'")
    assert [r.info.run_id for r in runs] == [run_id]
    assert runs[0].info.status == "FINISHED"
    steps = {m.step for m in mlflow.get_metric_history(run_id, "train_loss")}
    # The steps before the stop and after the resume, in the one run, as in the job's own series.
    assert steps == set(_series(client, job["id"], "train_loss")) and max(steps) == 60 and min(steps) == 1


def test_a_paused_and_resumed_job_continues_its_mlflow_run(env):
    client, stack = env["client"], env["stack"]
    job = _long_job(env, "paused")
    assert client.post(f"/fine_tuning/jobs/{job['id']}/pause").json()["status"] == "paused"
    deadline = time.monotonic() + 120
    while (r := client.post(f"/fine_tuning/jobs/{job['id']}/resume")).status_code == 409:
        assert r.json()["error"]["code"] == "still_stopping" and time.monotonic() < deadline, stack.logs()
        time.sleep(0.5)
    assert r.json()["status"] == "queued"
    job = wait_for(client, job["id"], stack=stack)
    assert job["status"] == "succeeded", (job["error"], stack.logs())
    _one_finished_run_with_every_step(env, job)


def test_a_job_resumed_after_its_worker_died_continues_its_mlflow_run(env):
    client, stack = env["client"], env["stack"]
    job = _long_job(env, "killed", save_steps=5)
    deadline = time.monotonic() + 120
    while max(_series(client, job["id"], "train_loss") or [0]) < 8:  # past the step-5 checkpoint
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.2)
    worker = next(proc for name, proc in stack.procs if name == "worker")
    kill_group(worker.pid)  # the worker and its task process, with no chance to end the run
    worker.wait()
    stack.spawn("worker-2", "worker", "--queues", "prepare,train,publish", "--loglevel", "INFO")
    job = wait_for(client, job["id"], stack=stack)
    assert job["status"] == "succeeded" and job["attempts"] == 2, (job["error"], stack.logs())
    _one_finished_run_with_every_step(env, job)
