"""No Docker engine runs here: check that compose.yaml parses and that every command it runs is a real
`hubtune` command that the CLI's own parser accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
HUBTUNE_SERVICES = {name: svc for name, svc in COMPOSE["services"].items() if svc.get("image", "").startswith("hubtune-")}


def test_deployment_has_the_designed_services():
    assert {"postgres", "redis", "migrate", "server", "worker-cpu", "worker-gpu"} <= set(COMPOSE["services"])
    assert "--appendonly" in COMPOSE["services"]["redis"]["command"]
    gpu = COMPOSE["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


@pytest.mark.parametrize("name", sorted(HUBTUNE_SERVICES))
def test_every_command_is_a_real_hubtune_command(name):
    service = HUBTUNE_SERVICES[name]
    args = build_parser().parse_args(service["command"])
    assert callable(args.func)
    env = service["environment"]
    assert env["HUBTUNE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["HUBTUNE_BROKER_URL"].startswith("redis://")


def test_workers_split_the_queues():
    queues = {name: build_parser().parse_args(HUBTUNE_SERVICES[name]["command"]).queues.split(",")
              for name in ("worker-cpu", "worker-gpu")}
    assert queues == {"worker-cpu": ["prepare", "publish"], "worker-gpu": ["train"]}
    assert HUBTUNE_SERVICES["worker-gpu"]["environment"]["HUBTUNE_WORKER_MAX_TASKS_PER_CHILD"] == "1"


def test_dockerfile_copies_every_package():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("hubtune", "cli", "server", "worker", "plugin", "migrations"):
        assert f"COPY {package} ./{package}" in dockerfile


def test_machines_share_no_file_system_only_object_storage():
    """Server and workers may run on different machines: no volume between them, storage in S3."""
    named = set(COMPOSE.get("volumes", {}))
    for name in ("server", "worker-cpu", "worker-gpu"):
        service = COMPOSE["services"][name]
        mounts = [v.split(":")[0] for v in service.get("volumes", [])]
        assert not set(mounts) & named, (name, mounts)
        env = service["environment"]
        assert env["HUBTUNE_STORAGE_URL"].split(":-")[-1].startswith("s3://")
        for secret in ("HUBTUNE_SECRET_KEY", "HUBTUNE_SESSION_SECRET", "HUBTUNE_WEBHOOK_SECRET"):
            assert secret in env, (name, secret)
    assert "-s3" in COMPOSE["services"]["objectstore"]["command"]
