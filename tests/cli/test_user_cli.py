"""`hubtune files upload` and `hubtune jobs create|list|get|cancel|follow` as a user types them, against
a real server and worker (embedded SQLite + file-system queue), with tables, --json and the progress bar."""

from __future__ import annotations

import json
import subprocess

import pytest

from testkit.tiny_models import make_tiny_bert, write_classification_jsonl
from testkit.stack import Stack, hubtune_cmd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    stack = Stack(root, {"HUBTUNE_HEARTBEAT_SECONDS": "1"})
    stack.run("hub", "import", str(make_tiny_bert(root / "tiny-bert")), "tiny/bert")
    stack.start()
    keys = {name: stack.run("keys", "create", "--name", name).strip() for name in ("alice", "bob")}
    try:
        yield {"stack": stack, "keys": keys, "root": root}
    finally:
        stack.stop()


def cli(env, *args: str, who: str = "alice", timeout: float = 300) -> subprocess.CompletedProcess:
    stack = env["stack"]
    return subprocess.run(hubtune_cmd(*args, "--url", stack.url, "--key", env["keys"][who]), env=stack.env,
                          capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_upload_create_follow_list_get(env):
    path = write_classification_jsonl(env["root"] / "train.jsonl", n=32, seed=1)
    out = ok(cli(env, "files", "upload", str(path)))
    header, row = out.splitlines()
    assert header.split() == ["ID", "FILENAME", "BYTES", "PURPOSE"] and row.split()[1:] == [
        "train.jsonl", str(path.stat().st_size), "fine-tune"]
    file_id = row.split()[0]
    assert json.loads(ok(cli(env, "files", "upload", str(path), "--json")))["filename"] == "train.jsonl"

    followed = cli(env, "jobs", "create", "--model", "tiny/bert", "--training-file", file_id, "--task",
                   "sequence_classification", "--batch-size", "8", "--training", '{"max_steps": 6, "max_seq_length": 32}',
                   "--follow")
    out = ok(followed)
    job_id = out.splitlines()[0].removeprefix("created ").strip()
    assert job_id.startswith("ftjob-")
    assert "100.0%  step 6/6" in out and "loss" in out  # the progress bar reached the end
    assert "Training started" in out  # the event log, as it happened
    assert any(line.split() == ["status", "succeeded"] for line in out.splitlines())

    listed = ok(cli(env, "jobs", "list"))
    lines = listed.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "STAGE"]
    assert any(line.startswith(job_id) and " succeeded " in line and "tiny/bert" in line for line in lines[1:])
    page = json.loads(ok(cli(env, "jobs", "list", "--json", "--status", "succeeded")))
    assert job_id in [j["id"] for j in page["data"]] and all(j["status"] == "succeeded" for j in page["data"])
    assert json.loads(ok(cli(env, "jobs", "list", "--json", "--status", "failed")))["data"] == []

    shown = ok(cli(env, "jobs", "get", job_id))
    assert "succeeded" in shown and "step 6/6" in shown and "lora/sequence_classification" in shown
    assert json.loads(ok(cli(env, "jobs", "get", job_id, "--json")))["id"] == job_id

    # Another owner's job does not exist for Bob; the error names it and the exit status says so.
    denied = cli(env, "jobs", "get", job_id, who="bob")
    assert denied.returncode == 1 and f"No such fine-tuning job: {job_id}" in denied.stderr
    assert job_id not in ok(cli(env, "jobs", "list", who="bob"))


def test_cancel_and_follow_a_cancelled_job(env):
    path = write_classification_jsonl(env["root"] / "long.jsonl", n=32, seed=2)
    file_id = ok(cli(env, "files", "upload", str(path))).splitlines()[1].split()[0]
    job = json.loads(ok(cli(env, "jobs", "create", "--model", "tiny/bert", "--training-file", file_id,
                            "--task", "sequence_classification", "--training", '{"max_steps": 5000}', "--json")))
    assert job["status"] == "validating_files"
    assert ok(cli(env, "jobs", "cancel", job["id"])).strip() == f"{job['id']}: cancelled"
    followed = cli(env, "jobs", "follow", job["id"], timeout=60)
    assert followed.returncode == 1 and "cancelled" in followed.stdout  # ended, but did not succeed


def test_user_mistakes_are_clear_errors(env):
    missing = cli(env, "jobs", "create", "--model", "tiny/bert")
    assert missing.returncode == 1 and "--training-file is required" in missing.stderr
    bad = cli(env, "jobs", "create", "--model", "tiny/bert", "--training-file", "file-nope")
    assert bad.returncode == 1 and "file-nope" in bad.stderr and "training_file" in bad.stderr
    unreachable = subprocess.run(hubtune_cmd("jobs", "list", "--url", "http://127.0.0.1:9", "--key", "k"),
                                 env=env["stack"].env, capture_output=True, text=True, timeout=60)
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


def test_metadata_and_integrations_from_the_command_line(env):
    file_id = json.loads(ok(cli(env, "files", "upload", str(write_classification_jsonl(
        env["root"] / "meta.jsonl", n=16, seed=5)), "--json")))["id"]
    created = json.loads(ok(cli(env, "jobs", "create", "--model", "tiny/bert", "--training-file", file_id,
                                "--training", '{"max_steps": 2, "max_seq_length": 32}', "--metadata", "team=support",
                                "--metadata", "query=a=b", "--integration", "tensorboard", "--json")))
    assert created["metadata"] == {"team": "support", "query": "a=b"}
    assert created["integrations"] == [{"type": "tensorboard"}]
    listed = json.loads(ok(cli(env, "jobs", "list", "--metadata", "team=support", "--metadata", "query=a=b", "--json")))
    assert [j["id"] for j in listed["data"]] == [created["id"]]
    assert json.loads(ok(cli(env, "jobs", "list", "--metadata", "team=other", "--json")))["data"] == []
    bad = cli(env, "jobs", "create", "--model", "tiny/bert", "--training-file", file_id, "--metadata", "team")
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    unknown = cli(env, "jobs", "create", "--model", "tiny/bert", "--training-file", file_id, "--integration", "comet")
    assert unknown.returncode == 1 and "integrations[0].type" in unknown.stderr
