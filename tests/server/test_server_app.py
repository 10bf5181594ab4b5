"""The app factory: settings from the environment, the process Celery app, and a light import."""

from __future__ import annotations

import subprocess
import sys

from fastapi.testclient import TestClient

from hubtune import queue, settings as settings_module
from hubtune.queue import PREPARE, make_celery
from hubtune.settings import Settings
from server.app import create_app
from tests.server.apitest_helpers import Env, auth, create_job, upload


def test_default_app_uses_process_settings_and_get_celery(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.setenv("HUBTUNE_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("HUBTUNE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("HUBTUNE_BROKER_URL", "filesystem://")
    monkeypatch.setenv("HUBTUNE_MODEL_CHECK_SECONDS", "0")  # no base model in this empty hub: not what is tested
    settings_module.get_settings.cache_clear()
    try:
        # A test (or the CLI) may swap the process-wide Celery app; the default app rings through it.
        patched = Settings(data_dir=tmp_path / "patched", broker_url="filesystem://")
        monkeypatch.setattr(queue, "get_celery", lambda: make_celery(patched))
        app = create_app()
        assert app.state.settings.resolved_database_url == sqlite_url
        env = Env(settings=patched, app=app, client=TestClient(app), url=sqlite_url)
        key = env.key()
        job = create_job(env.client, key, upload(env.client, key)["id"])
        assert env.doorbells() == [(PREPARE, [job["id"]], "prepare")]
        assert (app.state.settings.storage_dir / "files").is_dir()
        assert env.client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth(key)).status_code == 200
    finally:
        settings_module.get_settings.cache_clear()


def test_server_does_not_import_the_training_stack():
    code = (
        "import sys, server.app; server.app.create_app; "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'worker') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
