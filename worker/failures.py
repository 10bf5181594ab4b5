"""Turning exceptions into a job's `error` {code, message, param}: user mistakes get their own code."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hubtune.errors import JobError


def job_error(exc: BaseException) -> dict[str, Any]:
    """A JobError or a hub error keeps its code and param; anything else is ours: internal_error."""
    from plugin.errors import HubError

    if isinstance(exc, JobError):
        return {"code": exc.code, "message": without_server_paths(str(exc)), "param": exc.param}
    if isinstance(exc, HubError):
        return {"code": exc.code or "hub_error", "message": without_server_paths(str(exc)), "param": None}
    return {"code": "internal_error", "message": without_server_paths(f"{type(exc).__name__}: {exc}"), "param": None}


def without_server_paths(text: str) -> str:
    """The message with the server's folders (data dir, hub, hub cache, temp dir) replaced by a name:
    job errors reach API answers, and a library's error (an OSError, a loader's complaint) may quote a
    file path that says how the server is laid out."""
    from hubtune.settings import get_settings

    settings = get_settings()
    folders = {settings.hub_cache_dir: "<hub-cache>", settings.resolved_hub_dir: "<hub>",
               settings.data_dir: "<data>", Path(tempfile.gettempdir()): "<tmp>"}
    spellings = {}
    for folder, name in folders.items():
        for form in {str(folder.absolute()), str(folder.resolve())}:
            if form != "/":
                spellings[form] = name
    for form in sorted(spellings, key=len, reverse=True):  # the hub dir before the data dir holding it
        text = text.replace(form, spellings[form])
    return text
