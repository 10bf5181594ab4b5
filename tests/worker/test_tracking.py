"""The worker's side of a job's integrations: it re-checks them against its own settings before training
(a job error naming the field), a tracking server that is down costs a warning and not the training,
and wandb runs offline with its files in the artifact."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import select

from hubtune.db import session_scope
from hubtune.errors import JobError
from hubtune.models import JobEvent
from hubtune.settings import Settings
from hubtune.spec import JobRequest
from testkit.services import free_port
from testkit.leases import claimed_lease
from worker.hooks import JobHooks
from worker.tracking import tracked


@pytest.fixture
def lease(tmp_path, monkeypatch):
    with claimed_lease(tmp_path, monkeypatch, "ftjob-track") as lease:
        yield lease


def _request(*integrations) -> JobRequest:
    return JobRequest.model_validate({"model": "tiny/bert", "training_file": "file-1", "task": "causal_lm",
                                      "integrations": list(integrations)})


def _hooks(lease, request, settings, tmp_path):
    return tracked(JobHooks(lease), job_id=lease.job_id, request=request, hyperparameters={"n_epochs": 1},
                   seed=1, lease=lease, artifact_dir=tmp_path / "artifact", settings=settings)


def _events() -> list[JobEvent]:
    with session_scope() as s:
        return list(s.execute(select(JobEvent).order_by(JobEvent.id)).scalars())


def test_the_worker_checks_integrations_against_its_own_settings(lease, tmp_path):
    # The server allowed it (another configuration); this worker does not: the job fails, naming the field.
    request = _request({"type": "mlflow", "mlflow": {"tracking_uri": "http://10.1.2.3:5000"}})
    with pytest.raises(JobError) as caught:
        _hooks(lease, request, Settings(mlflow_tracking_uri="http://127.0.0.1:5000"), tmp_path)
    assert caught.value.param == "integrations[0].mlflow.tracking_uri"
    wandb = _request({"type": "tensorboard"}, {"type": "wandb", "wandb": {"project": "p"}})
    with pytest.raises(JobError) as caught:
        _hooks(lease, wandb, Settings(), tmp_path)
    assert caught.value.param == "integrations[1].type"


def test_a_tracking_server_that_is_down_costs_a_warning_not_the_training(lease, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    hooks = _hooks(lease, _request({"type": "mlflow"}), Settings(mlflow_tracking_uri=dead), tmp_path)
    with hooks:
        hooks.on_start(total_steps=2, trainable_params=1, total_params=2)
        hooks.on_metrics({"step": 1, "train_loss": 1.0, "trained_tokens": 10})
        hooks.on_metrics({"step": 2, "train_loss": 0.5, "trained_tokens": 20})
    events = _events()
    warnings = [e for e in events if e.level == "warn"]
    assert len(warnings) == 1 and warnings[0].message.startswith("MLflow tracking stopped")
    assert dead.split("//")[1] not in warnings[0].message  # where the deployment's server is stays private
    assert warnings[0].data == {"integration": "mlflow"}
    assert [e.data["step"] for e in events if e.type == "metrics"] == [1, 2]  # the job's own metrics: all there
    assert not lease.lost.is_set()


def test_wandb_runs_offline_into_the_artifact_without_the_workers_host(lease, tmp_path):
    request = _request({"type": "wandb", "wandb": {"project": "tickets", "name": "r1", "tags": ["a"]}})
    hooks = _hooks(lease, request, Settings(wandb_enabled=True), tmp_path)
    with hooks:
        hooks.on_start(total_steps=2, trainable_params=1, total_params=2)
        hooks.on_metrics({"step": 1, "train_loss": 1.0, "trained_tokens": 10})
        hooks.on_metrics({"step": 2, "train_loss": 0.5, "trained_tokens": 20})
    assert not [e for e in _events() if e.level == "warn"], [e.message for e in _events()]
    runs = list((tmp_path / "artifact" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = [p for p in (tmp_path / "artifact").rglob("*") if not p.is_dir()]
    assert not [p for p in files if p.is_symlink()]  # nothing that points out of the artifact
    assert any(p.suffix == ".wandb" for p in files), files
    contents = b"".join(p.read_bytes() for p in files)
    assert b"tickets" in contents and b"train_loss" in contents
    assert str(tmp_path).encode() not in contents and b"hubtune-worker" in contents  # not the worker's name
    if len(host := socket.gethostname().encode()) >= 4:  # shorter ones match random bytes
        assert host not in contents
