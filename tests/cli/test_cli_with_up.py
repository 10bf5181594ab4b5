"""The client commands against a real `hubtune up` on a port that is not the default, given only the data
dir (after the command) — no --url, no --key: they find the server through the URL `up` recorded. The
verbs beyond create/list/get (files list|delete, jobs pause|resume|events|checkpoints), follow's ETA,
one-line API errors, and output piped into `head`."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from types import SimpleNamespace

import pytest

from testkit.tiny_models import make_tiny_bert, write_classification_jsonl
from testkit.services import free_port
from testkit.stack import hubtune_cmd

pytestmark = pytest.mark.e2e


def _env() -> dict[str, str]:
    # None of the developer's HUBTUNE_* settings: embedded mode, the default URL, no key in the environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBTUNE_") or k == "HUBTUNE_TEST_REDIS_PORT"}
    env.pop("HF_ENDPOINT", None)
    return {**env, "HUBTUNE_HEARTBEAT_SECONDS": "1"}


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    root = tmp_path_factory.mktemp("up")
    data, env, port = root / "data", _env(), free_port()
    imported = subprocess.run(hubtune_cmd("hub", "import", str(make_tiny_bert(root / "tiny-bert")), "tiny/bert",
                                          "--data-dir", "data"), cwd=root, env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    log = open(root / "up.log", "w")
    proc = subprocess.Popen(hubtune_cmd("up", "--port", str(port), "--data-dir", "data"), cwd=root, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not (data / "server.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, (root / "up.log").read_text()
            time.sleep(0.3)
        yield SimpleNamespace(root=root, data=data, env=env, port=port, proc=proc)
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: up stops its workers
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def cli(up, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(hubtune_cmd(*args, "--data-dir", "data"), cwd=up.root, env={**up.env, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    assert result.stderr == "", result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def upload(up, name: str, *, seed: int) -> str:
    write_classification_jsonl(up.root / name, n=32, seed=seed)
    return ok(cli(up, "files", "upload", name)).splitlines()[1].split()[0]


def long_job(up, file_id: str) -> str:
    job = json.loads(ok(cli(up, "jobs", "create", "--model", "tiny/bert", "--training-file", file_id, "--task",
                            "sequence_classification", "--batch-size", "8",
                            "--training", '{"max_steps": 5000, "max_seq_length": 32}', "--json")))
    return job["id"]


def test_client_commands_find_the_server_that_up_recorded(up):
    record = json.loads((up.data / "server.json").read_text())
    assert record["url"] == f"http://127.0.0.1:{up.port}" and record["pid"] == up.proc.pid
    file_id = upload(up, "found.jsonl", seed=1)  # no --url, no --key: the record and the data dir's admin key
    assert file_id.startswith("file-")
    before = subprocess.run(hubtune_cmd("--data-dir", "data", "files", "list"), cwd=up.root, env=up.env,
                            capture_output=True, text=True, timeout=60)
    assert file_id in ok(before)
    # $HUBTUNE_URL overrides the record, --url overrides both.
    dead = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(cli(up, "files", "list", env={"HUBTUNE_URL": dead}))
    assert f"cannot reach the hubtune server at {dead} ($HUBTUNE_URL)" in line
    assert file_id in ok(cli(up, "files", "list", "--url", record["url"], env={"HUBTUNE_URL": dead}))


def test_files_list_and_delete(up):
    file_id = upload(up, "doomed.jsonl", seed=2)
    listed = ok(cli(up, "files", "list")).splitlines()
    assert listed[0].split() == ["ID", "FILENAME", "BYTES", "PURPOSE", "CREATED"]
    assert any(line.split()[:2] == [file_id, "doomed.jsonl"] for line in listed[1:])
    assert file_id in [f["id"] for f in json.loads(ok(cli(up, "files", "list", "--json")))["data"]]
    assert ok(cli(up, "files", "delete", file_id)).strip() == f"{file_id}: deleted"
    assert file_id not in ok(cli(up, "files", "list"))
    line = one_line_error(cli(up, "files", "delete", file_id))
    assert line.startswith(f"error: No such file: {file_id}")


def _read_until(proc: subprocess.Popen, text: str, timeout: float) -> str:
    """What `proc` wrote to stdout until `text` appeared (progress lines end in \\r, not \\n)."""
    seen, deadline = b"", time.monotonic() + timeout
    while text.encode() not in seen:
        assert time.monotonic() < deadline and proc.poll() is None, seen.decode(errors="replace")
        if select.select([proc.stdout], [], [], 1)[0]:
            seen += os.read(proc.stdout.fileno(), 65536)
    return seen.decode(errors="replace")


def test_follow_shows_the_eta_then_pause_checkpoints_events_resume(up):
    job_id = long_job(up, upload(up, "long.jsonl", seed=3))
    follow = subprocess.Popen(hubtune_cmd("jobs", "follow", job_id, "--data-dir", "data"), cwd=up.root,
                              env=up.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        shown = _read_until(follow, "ETA ", timeout=240)
    finally:
        follow.kill()
        follow.wait()
    progress = shown.rsplit("\r", 1)[-1]
    assert "step " in progress and "ETA " in progress, shown[-500:]
    assert "ETA" in ok(cli(up, "jobs", "get", job_id))  # the "estimated finish" row says how long too

    assert ok(cli(up, "jobs", "pause", job_id)).strip() == f"{job_id}: paused"
    deadline = time.monotonic() + 120  # the worker saves a checkpoint at the step it stops on
    while not json.loads(ok(cli(up, "jobs", "checkpoints", job_id, "--json")))["data"]:
        assert time.monotonic() < deadline, "no checkpoint after the pause"
        time.sleep(1)
    checkpoints = ok(cli(up, "jobs", "checkpoints", job_id)).splitlines()
    assert checkpoints[0].split()[:4] == ["ID", "STEP", "CHECKPOINT", "CREATED"]
    step = checkpoints[1].split()[1]
    assert int(step) > 0 and f"{job_id}:ckpt-step-{step}" in checkpoints[1]

    events = ok(cli(up, "jobs", "events", job_id, "--limit", "100")).splitlines()
    assert events[0].split() == ["TIME", "LEVEL", "MESSAGE"]
    messages = [line.split(None, 3)[3] for line in events[1:] if len(line.split(None, 3)) == 4]
    # The newest 100 events, oldest first as a log reads (a fast worker logs more than 100 steps before
    # the pause lands, so "Training started" may be older than the page).
    times = [line[:19] for line in events[1:] if line[:2] == "20"]  # not the "(older: --after ...)" hint
    assert times == sorted(times), events
    paused = next(i for i, m in enumerate(messages) if m == "Fine-tuning job paused")
    assert any(m.startswith(("Training started", "Step ")) for m in messages[:paused]), events

    deadline = time.monotonic() + 60
    while (resumed := cli(up, "jobs", "resume", job_id)).returncode != 0:
        line = one_line_error(resumed)  # 409 while the worker still saves the checkpoint: one line too
        assert "still stopping" in line and time.monotonic() < deadline, line
        time.sleep(1)
    assert ok(resumed).strip() in (f"{job_id}: queued", f"{job_id}: running")
    assert ok(cli(up, "jobs", "cancel", job_id)).strip() == f"{job_id}: cancelled"
    line = one_line_error(cli(up, "jobs", "resume", job_id))
    assert "only a paused job can be resumed" in line and line.endswith("(param: fine_tuning_job_id)")


def _piped(up, args: list[str], head: list[str]) -> tuple[subprocess.Popen, str, str]:
    """`hubtune ARGS | head HEAD`, a real pipe: hubtune's exit status and stderr, head's output."""
    producer = subprocess.Popen(hubtune_cmd(*args, "--data-dir", "data"), cwd=up.root, env=up.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader = subprocess.Popen(["head", *head], stdin=producer.stdout, stdout=subprocess.PIPE)
    producer.stdout.close()  # head alone holds the read end: when it exits, writing fails with EPIPE
    out = reader.communicate(timeout=120)[0].decode()
    err = producer.stderr.read().decode()
    producer.stderr.close()
    return producer.wait(timeout=60), out, err


def test_output_into_a_pipe_that_closes_early(up):
    job_id = long_job(up, upload(up, "piped.jsonl", seed=4))
    ok(cli(up, "jobs", "cancel", job_id))
    rc, out, err = _piped(up, ["jobs", "get", job_id], ["-4"])
    assert out.splitlines()[0].split() == ["id", job_id] and len(out.splitlines()) == 4
    assert err == "" and rc in (0, 1)
    for args in (["jobs", "get", job_id], ["jobs", "list"], ["jobs", "events", job_id], ["files", "list", "--json"]):
        rc, out, err = _piped(up, args, ["-n", "0"])  # the reader is gone before hubtune writes a byte
        assert (rc, out, err) == (1, "", ""), (args, rc, err)


def test_up_removes_its_record_when_it_stops(up):
    """Last in this module: it stops the server."""
    _stop(up.proc)
    assert not (up.data / "server.json").exists()
    default = free_port()
    line = one_line_error(cli(up, "files", "list", env={"HUBTUNE_PORT": str(default)}))
    assert f"at http://127.0.0.1:{default} (the default)" in line
