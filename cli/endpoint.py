"""Where the client commands (`hubtune files|jobs|demo`) find the server and their API key.

`hubtune up` records the URL it serves in <data dir>/server.json once the server has bound its socket,
and removes it when it exits. A client takes, in this order: --url, $HUBTUNE_URL, that record (unless
the process that wrote it is gone), http://HUBTUNE_HOST:HUBTUNE_PORT. The key: --key,
$HUBTUNE_API_KEY, the embedded admin key in the data dir."""

from __future__ import annotations

import atexit
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.errors import CliError

URL_ENV = "HUBTUNE_URL"
KEY_ENV = "HUBTUNE_API_KEY"
RECORD_NAME = "server.json"


@dataclass(frozen=True)
class Endpoint:
    url: str
    source: str  # where the URL came from, for the "cannot reach" message


# --- the record `hubtune up` keeps --------------------------------------------------------------------


def record_url(server: Any, *, data_dir: Path, host: str) -> None:
    """Write <data_dir>/server.json once the uvicorn `server` is serving (so its real port is known,
    `--port 0` included), and remove it when this process exits."""
    path = data_dir.resolve() / RECORD_NAME

    def wait_then_write() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        record = {"url": f"http://{_client_host(host)}:{port}", "pid": os.getpid(), "hostname": socket.gethostname()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(path)  # a reader never sees half a file

    atexit.register(_forget, path)
    threading.Thread(target=wait_then_write, name="record-url", daemon=True).start()


def _client_host(host: str) -> str:
    # A wildcard bind is reachable on loopback; an IPv6 literal needs brackets in a URL.
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _forget(path: Path) -> None:
    # Only our own record: a second `up` on the same data dir may have written its own since.
    if (_read(path) or {}).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("url"), str) else None


def recorded_url(data_dir: Path) -> str | None:
    """The URL `hubtune up` recorded in `data_dir`, unless the process that wrote it is gone (killed
    before it could remove the record)."""
    record = _read(data_dir / RECORD_NAME)
    if record is None:
        return None
    if record.get("hostname") == socket.gethostname() and not _alive(record.get("pid")):
        return None
    return record["url"]


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


# --- resolution ---------------------------------------------------------------------------------------


def resolve_url(flag: str | None) -> Endpoint:
    from hubtune.settings import get_settings

    settings = get_settings()
    if flag:
        return Endpoint(flag.rstrip("/"), "--url")
    if os.environ.get(URL_ENV):
        return Endpoint(os.environ[URL_ENV].rstrip("/"), f"${URL_ENV}")
    recorded = recorded_url(settings.data_dir)
    if recorded:
        return Endpoint(recorded.rstrip("/"), f"recorded by `hubtune up` in {settings.data_dir / RECORD_NAME}")
    return Endpoint(f"http://{settings.host}:{settings.port}", "the default")


def resolve_key(flag: str | None) -> str:
    from hubtune.settings import get_settings

    key = flag or os.environ.get(KEY_ENV)
    if key:
        return key
    path = get_settings().data_dir / "admin.key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise CliError(f"no API key: pass --key, set ${KEY_ENV}, or run `hubtune up` to make {path}") from None
