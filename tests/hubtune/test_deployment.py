"""Several machines (HUBTUNE_STORAGE_URL set) must share their secrets, database, broker and an hf hub:
each missing one is named at start, and the embedded default (one machine) needs none of them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hubtune.deployment import DeploymentError, check, problems_of
from hubtune.settings import Settings

SHARED = dict(secret_key="k" * 32, session_secret="s" * 32, webhook_secret="whsec_x", hub_backend="hf",
              database_url="postgresql+psycopg://db/hubtune", broker_url="redis://broker:6379/0")


def test_the_embedded_default_needs_nothing(tmp_path):
    check(Settings(data_dir=tmp_path))


def test_remote_storage_names_every_missing_shared_setting(tmp_path):
    problems = " ".join(problems_of(Settings(data_dir=tmp_path, storage_url="s3://bucket/prefix")))
    for name in ("HUBTUNE_SECRET_KEY", "HUBTUNE_SESSION_SECRET", "HUBTUNE_WEBHOOK_SECRET",
                 "HUBTUNE_DATABASE_URL", "HUBTUNE_BROKER_URL", "HUBTUNE_HUB_BACKEND=hf"):
        assert name in problems
    check(Settings(data_dir=tmp_path, storage_url="s3://bucket/prefix", **SHARED))
    with pytest.raises(DeploymentError, match="s3://bucket/prefix"):
        check(Settings(data_dir=tmp_path, storage_url="bucket/prefix", **SHARED))


@pytest.mark.parametrize("command", [["worker"], ["server", "--no-migrate"], ["up"]])
def test_a_process_refuses_to_start_without_them(command, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HUBTUNE_DATA_DIR": str(tmp_path), "HUBTUNE_STORAGE_URL": "s3://bucket/p"}
    out = subprocess.run([sys.executable, "-m", "cli", *command], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 2, out
    assert "HUBTUNE_SECRET_KEY" in out.stderr and "local hub is a folder on one machine" in out.stderr
    assert "Traceback" not in out.stderr
