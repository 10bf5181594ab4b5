"""What `hubtune up --demo` prints while it follows its job (cli.demo.follow and its summary),
against a real server and worker (embedded SQLite + file-system queue): to a pipe, plain lines with no
carriage return or ANSI code, the final bar once and the run's timings as a table; on a terminal, the
bar redrawn in place."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testkit.tiny_models import make_tiny_bert, write_classification_jsonl
from testkit.stack import Stack, upload, wait_for

pytestmark = pytest.mark.e2e

# The demo's own code, in a process of its own so that its stdout is really a pipe (or a terminal).
FOLLOW = """
import sys, httpx
from cli.demo import _summary, follow
url, key, job_id = sys.argv[1:]
client = httpx.Client(base_url=url + "/v1", headers={"Authorization": "Bearer " + key}, timeout=60)
_summary(follow(client, job_id))
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-output")
    stack = Stack(root, {"HUBTUNE_HEARTBEAT_SECONDS": "1"})
    stack.run("hub", "import", str(make_tiny_bert(root / "tiny-bert")), "tiny/bert")
    stack.start()
    key = stack.run("keys", "create", "--name", "alice").strip()
    client = stack.client(key)
    files = {name: upload(client, write_classification_jsonl(root / f"{name}.jsonl", n=n, seed=seed))
             for name, n, seed in (("train", 32, 1), ("valid", 8, 2))}
    try:
        yield {"stack": stack, "key": key, "client": client, "files": files}
    finally:
        stack.stop()


def _job(env) -> str:
    created = env["client"].post("/fine_tuning/jobs", json={
        "model": "tiny/bert", "training_file": env["files"]["train"], "validation_file": env["files"]["valid"],
        "task": "sequence_classification", "training": {"max_steps": 8, "max_seq_length": 32, "eval_steps": 4},
        "hyperparameters": {"batch_size": 8}})
    assert created.status_code == 200, created.text
    return created.json()["id"]


def _follow_args(env, job_id: str) -> list[str]:
    return [sys.executable, "-c", FOLLOW, env["stack"].url, env["key"], job_id]


def test_to_a_pipe_plain_lines_the_final_bar_once_and_a_timings_table(env):
    job_id = _job(env)
    out = subprocess.run(_follow_args(env, job_id), env=env["stack"].env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "\r" not in text and "\x1b[" not in text, repr(text)
    lines = text.splitlines()
    assert sum("100.0%  step 8/8" in line for line in lines) == 1, text  # the final bar, once
    assert any(line[8:].startswith(" Training started: 8 steps") for line in lines), text  # "HH:MM:SS message"
    assert "status: succeeded" in lines
    # The phases as a table: a header, a row per phase with its seconds, and their total.
    start = lines.index("timings:")
    assert lines[start + 1].split() == ["phase", "seconds"], text
    rows = {" ".join(line.split()[:-1]): float(line.split()[-1]) for line in lines[start + 3:]
            if line.startswith("  ") and line.split()[-1].replace(".", "").isdigit()}
    assert {"load", "train", "final evaluation", "total"} <= set(rows), rows
    assert rows["total"] >= rows["train"] > 0
    assert "timings_s" not in text


def test_on_a_terminal_the_bar_is_redrawn_in_place(env):
    job_id = _job(env)
    leader, follower = os.openpty()
    proc = subprocess.Popen(_follow_args(env, job_id), env=env["stack"].env, stdout=follower,
                            stderr=subprocess.PIPE)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    text = b"".join(chunks).decode()
    assert "\r\x1b[K" in text and "100.0%  step 8/8" in text
    assert wait_for(env["client"], job_id)["status"] == "succeeded"
