"""The `hubtune` command's failures as a user meets them, with no server running: one line on stderr,
a non-zero exit status, never a traceback; where the client commands look for the server; `--data-dir`
after the command."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from testkit.services import free_port
from testkit.stack import hubtune_cmd


def hubtune(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`hubtune *args` in `cwd`, with none of the developer's HUBTUNE_* settings (defaults: the data dir is
    cwd/.hubtune, the server http://127.0.0.1:8000)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HUBTUNE_") or k == "HUBTUNE_TEST_REDIS_PORT"}
    return subprocess.run(hubtune_cmd(*args), cwd=cwd, env={**base, **(env or {})}, capture_output=True,
                          text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess, *, rc: int = 1) -> str:
    assert result.returncode == rc, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_unreachable_database_is_one_line(tmp_path):
    port = free_port()
    url = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{port}/x"
    line = one_line_error(hubtune("keys", "create", "--name", "ops", cwd=tmp_path, env={"HUBTUNE_DATABASE_URL": url}))
    assert line.startswith(f"error: database postgresql+psycopg://postgres:***@127.0.0.1:{port}/x: ")
    assert "Connection refused" in line and "s3cret" not in line


def test_a_database_without_tables_says_to_migrate(tmp_path):
    line = one_line_error(hubtune("keys", "create", cwd=tmp_path))
    assert "unable to open database file" in line and "--data-dir" in line  # no data dir yet
    (tmp_path / ".hubtune").mkdir()
    line = one_line_error(hubtune("keys", "create", cwd=tmp_path))
    assert "no such table: api_keys" in line and "hubtune db upgrade" in line


def test_data_dir_before_or_after_the_command(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    assert hubtune("db", "upgrade", "--data-dir", str(data), cwd=tmp_path).returncode == 0
    after = hubtune("keys", "create", "--name", "a", "--data-dir", str(data), cwd=tmp_path)
    before = hubtune("--data-dir", str(data), "keys", "create", "--name", "b", cwd=tmp_path)
    assert after.returncode == 0 and before.returncode == 0, after.stderr + before.stderr
    assert (data / "hubtune.db").is_file() and not (tmp_path / ".hubtune").exists()


def test_json_options_say_what_is_wrong(tmp_path):
    line = one_line_error(hubtune("jobs", "create", "--model", "m", "--training-file", "f", "--tuning",
                                  "{type: lora}", cwd=tmp_path), rc=2)
    assert "--tuning" in line and "Expecting property name enclosed in double quotes" in line
    assert "line 1 column 2" in line and "'type: lora}'" in line
    line = one_line_error(hubtune("jobs", "create", "--training", "[1, 2]", cwd=tmp_path), rc=2)
    assert "--training" in line and "not a JSON object" in line
    body = tmp_path / "body.json"
    body.write_text('{"model": "m",\n "training_file": "f",}\n')
    line = one_line_error(hubtune("jobs", "create", "--key", "k", "--body", str(body), cwd=tmp_path), rc=2)
    assert f"--body {body}" in line and "line 2 column 23" in line
    line = one_line_error(hubtune("jobs", "create", "--key", "k", "--body", str(tmp_path / "nope.json"),
                                  cwd=tmp_path))
    assert "nope.json: No such file or directory" in line


def test_no_server_names_the_url_where_it_came_from_and_how_to_point_elsewhere(tmp_path):
    port = free_port()
    line = one_line_error(hubtune("jobs", "list", "--key", "k", cwd=tmp_path,
                                  env={"HUBTUNE_URL": f"http://127.0.0.1:{port}"}))
    assert f"cannot reach the hubtune server at http://127.0.0.1:{port} ($HUBTUNE_URL)" in line
    assert "Connection refused" in line and "--url" in line and "hubtune up" in line
    line = one_line_error(hubtune("files", "list", "--key", "k", "--url", f"http://127.0.0.1:{port}/", cwd=tmp_path,
                                  env={"HUBTUNE_URL": "http://127.0.0.1:9"}))
    assert f"at http://127.0.0.1:{port} (--url)" in line  # the flag wins over the environment
    line = one_line_error(hubtune("demo", "--key", "k", cwd=tmp_path, env={"HUBTUNE_URL": f"http://127.0.0.1:{port}"}))
    assert line.startswith(f"error: cannot reach http://127.0.0.1:{port}/v1/") and "Connection refused" in line


def test_the_record_hubtune_up_leaves_is_used_unless_its_process_is_gone(tmp_path):
    data, recorded, default = tmp_path / ".hubtune", free_port(), free_port()
    data.mkdir()
    (data / "admin.key").write_text("k\n")
    env = {"HUBTUNE_PORT": str(default)}
    (data / "server.json").write_text(json.dumps({"url": f"http://127.0.0.1:{recorded}", "pid": os.getpid(),
                                                  "hostname": os.uname().nodename}))
    line = one_line_error(hubtune("jobs", "list", cwd=tmp_path, env=env))
    assert f"at http://127.0.0.1:{recorded} (recorded by `hubtune up` in .hubtune/server.json)" in line
    line = one_line_error(hubtune("jobs", "list", cwd=tmp_path,
                                  env={**env, "HUBTUNE_URL": f"http://127.0.0.1:{default}"}))
    assert "($HUBTUNE_URL)" in line  # the environment wins over the record
    gone = subprocess.Popen(["true"])
    gone.wait()
    (data / "server.json").write_text(json.dumps({"url": f"http://127.0.0.1:{recorded}", "pid": gone.pid,
                                                  "hostname": os.uname().nodename}))
    line = one_line_error(hubtune("jobs", "list", cwd=tmp_path, env=env))
    assert f"at http://127.0.0.1:{default} (the default)" in line


@pytest.mark.parametrize("args", [["jobs", "create", "--tuning"], ["jobs", "frobnicate"], ["files"]])
def test_usage_mistakes_are_one_line_too(tmp_path, args):
    line = one_line_error(hubtune(*args, cwd=tmp_path), rc=2)
    assert line.startswith("hubtune ") and "--help" in line
