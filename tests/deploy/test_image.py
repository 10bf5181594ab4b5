"""The image, read as files (no Docker engine runs here): what the build context leaves out, the
Dockerfile's stages (a server target without torch and with a health check, a worker target with the
training stack, neither running as root), compose.yaml's choice of target per service, the documented
first admin key; and the server started in a process where the training stack cannot be imported."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
TRAINING_STACK = ("torch", "transformers", "peft", "accelerate", "safetensors", "numpy", "matplotlib")


# --- .dockerignore --------------------------------------------------------------------------------


def _dockerignore_regexes() -> list[re.Pattern]:
    """.dockerignore's patterns as Docker matches them: against the path from the context root, `*` and
    `?` within one path element, `**` across any number of them; a match on a folder excludes its contents."""
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "no exceptions: the tests below assume none"
        regex = ""
        i = 0
        while i < len(line):
            if line.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif line.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif line[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif line[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif line[i] == "[":
                end = line.index("]", i)
                regex, i = regex + line[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(line[i]), i + 1
        out.append(re.compile(regex.rstrip("/") + "(?:/.*)?"))
    return out


def excluded(path: str) -> bool:
    return any(r.fullmatch(path) for r in _dockerignore_regexes())


@pytest.mark.parametrize("path", [
    ".venv/bin/python", ".hubtune/admin.key", ".hubtune/hubtune.db", ".git/config", "admin.key",
    "deploy/secrets/server.key", ".env", "hubtune/__pycache__/spec.cpython-311.pyc", "tests/server/test_server_jobs.py",
    "test-artifacts/report.xml", "some/nested/.hubtune/secret.key",
])
def test_the_build_context_leaves_out_local_state_and_secrets(path):
    assert excluded(path), f"{path} would be sent to the Docker daemon"


def test_the_build_context_keeps_what_the_image_installs():
    copied = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")]
    assert copied, "the Dockerfile copies the sources"
    for source in copied:
        for path in [source, *(str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*")
                               if p.is_file() and "__pycache__" not in p.parts)]:
            assert not excluded(path), f"{path} is needed by the image but .dockerignore leaves it out"


# --- Dockerfile -----------------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, dict]:
    """name -> {"parent", "lines"}: each stage's instructions (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if m := re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE):
            current = m.group(2) or f"stage{len(stages)}"
            stages[current] = {"parent": m.group(1), "lines": []}
        else:
            stages[current]["lines"].append(line)
    return stages


def chain(stages: dict, name: str) -> list[str]:
    """Every instruction that builds stage `name`, its ancestors' first."""
    stage = stages[name]
    inherited = chain(stages, stage["parent"]) if stage["parent"] in stages else []
    return inherited + stage["lines"]


def instructions(lines: list[str], keyword: str) -> list[str]:
    return [line[len(keyword):].strip() for line in lines if line.upper().startswith(keyword + " ")]


def final_targets() -> set[str]:
    """The stages an image is made of: the ones compose.yaml builds, and the default (last) one."""
    stages = dockerfile_stages()
    named = {svc["build"]["target"] for svc in COMPOSE["services"].values() if isinstance(svc.get("build"), dict)}
    return named | {list(stages)[-1]}


def test_every_image_runs_as_an_unprivileged_user():
    stages = dockerfile_stages()
    assert final_targets() >= {"server", "worker"}
    for name in final_targets():
        users = instructions(chain(stages, name), "USER")
        assert users, f"stage {name} runs as root"
        assert users[-1].split(":")[0] not in ("root", "0"), f"stage {name} runs as {users[-1]}"


def test_the_server_image_has_no_training_stack_and_a_health_check():
    stages = dockerfile_stages()
    lines = chain(stages, "server")
    installs = " ".join(run for run in instructions(lines, "RUN") if "pip install" in run)
    assert "pip install" in installs
    assert "[worker" not in installs and "[demo" not in installs and "[test" not in installs
    assert not any(pkg in installs for pkg in TRAINING_STACK)
    checks = instructions(lines, "HEALTHCHECK")
    assert len(checks) == 1 and "/healthz" in checks[0]
    worker = " ".join(instructions(chain(stages, "worker"), "RUN"))
    assert '".[worker,tracking]"' in worker  # training stack and the jobs' MLflow/TensorBoard integrations


def test_compose_builds_the_slim_server_and_the_full_workers():
    stages = dockerfile_stages()
    services = COMPOSE["services"]
    for name, target in {"migrate": "server", "server": "server", "worker-cpu": "worker", "worker-gpu": "worker"}.items():
        assert services[name]["build"]["target"] == target, name
        assert target in stages
    assert services["server"]["image"] != services["worker-gpu"]["image"]


def test_the_first_admin_key_is_documented_and_the_command_is_real():
    command = "docker compose run --rm server keys create --admin --name admin"
    readme = (ROOT / "README.md").read_text()
    deployment = readme[readme.index("## Deployment"):]
    assert command in deployment and command in (ROOT / "compose.yaml").read_text()
    # The server image's entrypoint is `hubtune`: the words after the service name are its arguments.
    args = build_parser().parse_args(command.split("server ", 1)[1].split())
    assert args.admin and callable(args.func)


# --- the server without the training stack ---------------------------------------------------------


def test_the_api_server_runs_where_torch_cannot_be_imported(tmp_path):
    """What the server image holds: the base dependencies only. Any import of the training stack fails
    in this process, as it would there; the app starts, migrates a database and answers."""
    script = textwrap.dedent(f"""
        import sys
        from importlib.abc import MetaPathFinder

        class NoTrainingStack(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {TRAINING_STACK!r}:
                    raise ImportError(f"{{name}} is not installed in the server image")

        sys.meta_path.insert(0, NoTrainingStack())
        from fastapi.testclient import TestClient
        from cli import build_parser
        from hubtune.migrate import upgrade
        from hubtune.settings import Settings
        from server.app import create_app

        url = "sqlite:///{tmp_path / 'hubtune.db'}"
        upgrade(url)
        app = create_app(Settings(data_dir="{tmp_path / 'data'}", database_url=url, broker_url="filesystem://"))
        client = TestClient(app)
        assert client.get("/healthz").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        build_parser().parse_args(["keys", "create", "--admin"])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {TRAINING_STACK!r})
        assert not loaded, loaded
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_every_data_file_of_the_packages_is_installed():
    """`pip install .` (what the image runs) installs a package's non-Python files only when
    pyproject.toml's package-data names them; the server cannot start without the dashboard's."""
    import ast
    import fnmatch

    # The table's `name = ["glob", ...]` lines (tomllib is Python 3.11+; hubtune supports 3.10).
    table = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    package_data = {name.strip(): ast.literal_eval(value.strip()) for name, value in
                    (line.split("=", 1) for line in table.splitlines() if "=" in line and not line.startswith("#"))}
    missing = []
    for package in ("hubtune", "cli", "server", "worker", "plugin", "migrations"):
        for path in (ROOT / package).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            relative = str(path.relative_to(ROOT / package))
            if not any(fnmatch.fnmatch(relative, pattern) for pattern in package_data.get(package, [])):
                missing.append(str(path.relative_to(ROOT)))
    assert missing == [], "add these to [tool.setuptools.package-data] in pyproject.toml"
