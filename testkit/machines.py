"""Machines that share no file system, as a fault lab (testkit/faults.py): the server and each worker
have a data dir of their own, and everything they share goes through PostgreSQL, Redis, object storage
(SeaweedFS, testkit/objectstore.py) and the hub-compatible test server (testkit/hubserver.py).

A "machine" is a worker process with its own HUBTUNE_DATA_DIR: its cache and scratch space. The
scenarios inject the faults of several machines: one dies and another with an empty disk goes on, the
object store goes away for a while during a checkpoint save or an upload.
"""

from __future__ import annotations

import base64
import signal
import threading
import time
from pathlib import Path

from testkit.faults import Lab, Outcome, _wait
from testkit.hubserver import HubServer
from testkit.objectstore import SeaweedS3
from testkit.stack import upload
from testkit.tiny_models import write_classification_jsonl

HUB_TOKEN = "machines-hub-token"
OUTAGE_SECONDS = 30
# What every machine must share once storage is remote (hubtune/deployment.py refuses to start without).
SHARED = {
    "HUBTUNE_SECRET_KEY": "machines-lab-secret-key-0123456789",
    "HUBTUNE_SESSION_SECRET": "machines-lab-session-secret-0123456789",
    "HUBTUNE_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"machines-lab-webhook-secret-0123").decode(),
}


def machines_lab(root: Path) -> Lab:
    store = SeaweedS3(root / "seaweed").start()
    hub = HubServer(root / "hub-server", token=HUB_TOKEN).start()
    env = {
        "HUBTUNE_STORAGE_URL": f"s3://{store.new_bucket()}/hubtune", **store.env(), **SHARED,
        "HUBTUNE_HUB_BACKEND": "hf", "HUBTUNE_HUB_ENDPOINT": hub.url, "HUBTUNE_HUB_TOKEN": HUB_TOKEN,
        "HF_HUB_DISABLE_XET": "1", "HUBTUNE_HUB_RETRY_BASE_SECONDS": "0.2",
    }
    lab = Lab(root, env, closers=(hub.stop, store.close))
    lab.store, lab.hub = store, hub  # type: ignore[attr-defined]
    return lab


def machine(lab: Lab, name: str) -> str:
    """Start a worker on machine `name`: its own data dir, empty the first time."""
    return lab.worker(name, env={"HUBTUNE_DATA_DIR": str(lab.root / f"machine-{name}")})


def sigkill_then_another_machine(lab: Lab) -> Outcome:
    """Machine a's worker is SIGKILLed after a checkpoint; machine b, with an empty data dir, resumes the
    job from the checkpoint in object storage and publishes the adapter."""
    machine(lab, "a")
    job_id = lab.create_job(max_steps=120, save_steps=10)
    lab.wait_trained_past_checkpoint(job_id)
    lab.signal_worker("a", signal.SIGKILL)
    t0 = time.time()
    machine(lab, "b")
    resumed_at = lab.first_event_after(job_id, t0, "Resuming from checkpoint-")
    lab.wait_status(job_id, {"succeeded", "failed"})
    return lab.outcome("worker SIGKILLed on one machine, resumed on another", [job_id], t0=t0,
                       recovered_at=resumed_at)


def storage_down_during_checkpoint(lab: Lab, *, seconds: float = OUTAGE_SECONDS) -> Outcome:
    """The object store is down for `seconds` while a job saves checkpoints: the save waits it out
    (the lease stays alive on its heartbeat), training goes on, the job succeeds."""
    machine(lab, "a")
    job_id = lab.create_job(max_steps=80, save_steps=10)
    _wait(lambda: lab.sql("SELECT 1 FROM checkpoints WHERE job_id = :id", id=job_id), 180, "a first checkpoint")
    lab.store.stop()
    t0 = time.time()
    time.sleep(seconds)
    lab.store.start()
    back = time.time()
    saved = lab.first_event_after(job_id, back, "Checkpoint saved")
    lab.wait_status(job_id, {"succeeded", "failed"})
    return lab.outcome(f"object store down {seconds:.0f} s during checkpoint saves", [job_id], t0=t0,
                       recovered_at=saved)


def storage_down_during_upload(lab: Lab, *, seconds: float = OUTAGE_SECONDS) -> Outcome:
    """The object store is down for `seconds` while a training file is uploaded: the upload waits it
    out (the server retries), then a job trains on that file and succeeds."""
    machine(lab, "a")
    path = write_classification_jsonl(lab.root / f"outage-{lab.n}.jsonl", n=64, seed=lab.n + 5)
    lab.store.stop()
    t0 = time.time()
    result: dict = {}
    client = lab.client()
    client.timeout = 600
    uploader = threading.Thread(target=lambda: result.update(file_id=upload(client, path)))
    uploader.start()
    time.sleep(seconds)
    lab.store.start()
    uploader.join(600)
    uploaded = time.time()
    lab.train_file["alice"] = result["file_id"]
    job_id = lab.create_job(max_steps=20, save_steps=10)
    lab.wait_status(job_id, {"succeeded", "failed"})
    return lab.outcome(f"object store down {seconds:.0f} s during an upload", [job_id], t0=t0, recovered_at=uploaded)


def disk_full_on_a_worker(lab: Lab, *, size_mb: int = 64) -> Outcome:
    """Machine "full" keeps its data dir on a small tmpfs that fills up while it trains (needs root to
    mount): its next checkpoint save fails with ENOSPC, the job goes back to the queue, the full worker
    takes no job while short of space, and machine b resumes from the stored checkpoint."""
    import subprocess

    mount = lab.root / f"machine-full-{lab.n}"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)], check=True)
    try:
        lab.worker("full", env={"HUBTUNE_DATA_DIR": str(mount), "HUBTUNE_MIN_FREE_DISK_BYTES": str(1 << 20)})
        job_id = lab.create_job(max_steps=120, save_steps=10)
        lab.wait_trained_past_checkpoint(job_id)
        t0 = time.time()
        with open(mount / "filler", "wb") as filler:  # every free byte, as another tenant of the disk would
            try:
                while True:
                    filler.write(b"\0" * (1 << 20))
                    filler.flush()
            except OSError:
                pass
        machine(lab, "b")
        resumed_at = lab.first_event_after(job_id, t0, "Resuming from checkpoint-")
        lab.wait_status(job_id, {"succeeded", "failed"})
        return lab.outcome("disk full on a worker's data dir", [job_id], t0=t0, recovered_at=resumed_at)
    finally:
        lab.stop_workers()
        subprocess.run(["umount", "-l", str(mount)], check=False)
