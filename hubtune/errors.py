"""The one error family for a job or request that breaks a rule a user can act on.

`JobError(code, message, param)` is raised by the core's job rules (hubtune.jobs) and joined by the
worker's data, option, method, prepare and estimate errors, so that each answer has one shape: the
server turns it into an HTTP error in one place (server/errors.py, a status per code), the worker
into the job's `error` {code, message, param} (worker/failures.py). The core never speaks HTTP.
"""

from __future__ import annotations


class JobError(Exception):
    """A rule the request or job breaks: `code` is stable (API answers, job errors, tests match on it),
    `message` is in words a user can act on, `param` names the offending field (None for the whole)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
