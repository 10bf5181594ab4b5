"""A real MLflow tracking server for tests: `mlflow server` (PyPI `mlflow`, the test extra) on a free
127.0.0.1 port, with a SQLite backend and an artifact folder in its own directory. Never a mock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from testkit.services import free_port
from testkit.stack import stop_processes

# Its first start creates and migrates the SQLite database, which takes a while on a busy machine.
START_SECONDS = 180


class MlflowServer:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        mlflow = Path(sys.executable).with_name("mlflow")  # the venv's bin/, beside this interpreter
        command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                   "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                   "--artifacts-destination", str(self.root / "artifacts")]
        with open(self.root / "mlflow.log", "a") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if httpx.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.close()
        raise RuntimeError(f"mlflow server did not answer in {START_SECONDS}s:\n{self.log()}")

    def log(self) -> str:
        path = self.root / "mlflow.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def close(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc], timeout=15)
            self.proc = None
