"""Security headers on every answer of every route, keys stored hashed, and `hubtune server` listening
on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import time

from sqlalchemy import select

from hubtune.models import ApiKey
from tests.security.test_route_table import _call, _routes
from tests.server.apitest_helpers import auth
from testkit.services import free_port
from testkit.stack import hubtune_cmd

ALWAYS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer"}


def test_every_route_answers_with_the_security_headers(env):
    key = env.key()
    for method, path, _route in _routes(env.app):
        url = path.replace("{", "").replace("}", "")
        for headers in ({}, auth(key)):
            r = _call(env.client, method, url, headers)
            for name, value in ALWAYS.items():
                assert r.headers.get(name) == value, (method, path, name, r.status_code)
            if path.startswith("/v1/"):
                assert r.headers["cache-control"] == "no-store", (method, path)
                assert "default-src 'none'" in r.headers["content-security-policy"], (method, path)


def test_page_policies(env):
    page = env.client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store"
    asset = env.client.get("/dashboard/static/app.js")
    assert asset.status_code == 200 and "no-store" not in asset.headers.get("cache-control", "")
    docs = env.client.get("/docs")  # Swagger UI loads from a CDN: no page policy there
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers
    # Error answers from the middleware (unknown route, 413) carry the headers too.
    assert env.client.get("/nope").headers["x-frame-options"] == "DENY"


def test_api_keys_are_stored_as_hashes_only(env):
    key = env.key()
    with env.session() as s:
        rows = s.execute(select(ApiKey)).scalars().all()
    stored = " ".join(str(getattr(row, column.key)) for row in rows for column in ApiKey.__table__.columns)
    assert key not in stored and key[10:] not in stored  # not even the part after the shown prefix


def test_server_binds_loopback_by_default(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBTUNE_")}  # no HUBTUNE_HOST
    env["HUBTUNE_DATA_DIR"] = str(tmp_path / "data")
    (tmp_path / "data").mkdir()
    subprocess.run(hubtune_cmd("db", "upgrade"), env=env, check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen(hubtune_cmd("server", "--port", str(port), "--no-migrate"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        listening = None
        while listening is None and time.monotonic() < deadline:
            listening = _listen_address(port)
            time.sleep(0.2)
        assert listening == "127.0.0.1", listening
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _listen_address(port: int) -> str | None:
    """The address a TCP socket listens on at `port`, from /proc/net/tcp (and tcp6)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    if len(address) == 8:
                        return ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
                    return "::" if set(address) == {"0"} else address
    return None
