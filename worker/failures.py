"""Turning exceptions into a job's `error` {code, message, param}: user mistakes get their own code."""

from __future__ import annotations

from typing import Any


def job_error(exc: BaseException) -> dict[str, Any]:
    from plugin.errors import HubError

    code = getattr(exc, "code", None)
    param = getattr(exc, "param", None)
    if isinstance(exc, HubError) or code:
        return {"code": code or "hub_error", "message": str(exc), "param": param}
    return {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}", "param": None}
