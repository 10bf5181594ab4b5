"""Issue 17 end to end: a server and two workers on "machines" with separate data dirs and no shared
file system, over PostgreSQL, Redis, SeaweedFS (object storage) and the hub-compatible test server.
A worker is SIGKILLed after a checkpoint; a worker with an empty data dir resumes from the checkpoint in
object storage; the adapter is published and nothing is lost. Then the store goes away for a while
during checkpoint saves, and the job rides it out."""

from __future__ import annotations

import pytest

from testkit.machines import machines_lab, sigkill_then_another_machine, storage_down_during_checkpoint

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = machines_lab(tmp_path_factory.mktemp("machines")).start()
    try:
        yield lab
    finally:
        lab.close()


def _resumed_step(lab, job_id: str) -> int:
    resumes = [e.message for e in lab.events(job_id) if e.message.startswith("Resuming from checkpoint-")]
    assert len(resumes) == 1, resumes
    return int(resumes[0].rsplit("-", 1)[1])


def test_a_machine_with_an_empty_disk_resumes_from_object_storage_and_publishes(lab):
    out = sigkill_then_another_machine(lab)
    job_id = out.jobs[0]
    assert (out.lost, out.twice, out.requeued) == (0, 0, 1), lab.stack.logs()[-6000:]

    # Machine b went on from the checkpoint machine a stored, at the step after it.
    step = _resumed_step(lab, job_id)
    events = lab.events(job_id)
    after = [e.data["step"] for e in events[[e.message for e in events].index(f"Resuming from checkpoint-{step}"):]
             if e.type == "metrics" and "train_loss" in (e.data or {})]
    assert after[0] == step + 1
    job = lab.job(job_id)
    assert job.lease_owner is None and job.artifact_path.startswith("s3://")
    paths = [r.path for r in lab.sql("SELECT path FROM checkpoints WHERE job_id = :id", id=job_id)]
    assert paths and all(p.startswith("s3://") for p in paths)

    # The adapter is on the hub, whole.
    repo_id, commit = job.fine_tuned_model.split("@")
    names = {p.name for p in lab.hub.hub.snapshot(repo_id, revision=commit).rglob("*")}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names

    # No machine kept the store on its disk: b read everything from object storage into its cache.
    for data_dir in (lab.root / "data", lab.root / "machine-a", lab.root / "machine-b"):
        assert not (data_dir / "storage").exists()
    assert any((lab.root / "machine-b" / "cache" / "files").iterdir())
    # Nothing lost: the training file still reads back whole through the API.
    with lab.client() as client:
        assert client.get(f"/files/{lab.train_file['alice']}/content").status_code == 200


def test_checkpoint_saves_wait_out_an_object_store_outage(lab):
    lab.stop_workers()
    out = storage_down_during_checkpoint(lab, seconds=12)
    job_id = out.jobs[0]
    assert (out.lost, out.twice, out.requeued) == (0, 0, 0), lab.stack.logs()[-6000:]
    assert "object storage" in lab.stack.logs()  # the worker logged its retries through the outage
