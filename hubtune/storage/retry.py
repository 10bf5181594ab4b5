"""Retries for object storage: a transient error (connection refused or reset, a timeout, a 5xx or
SlowDown) is retried with backoff until the budget is spent, then StorageUnavailable. Anything else
(403, a missing bucket) is the caller's at once: waiting would not change it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from hubtune.storage.base import StorageUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"})
FIRST_PAUSE, MAX_PAUSE = 0.5, 8.0


def transient(exc: BaseException | None) -> bool:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as EndpointError

    if exc is None:
        return False
    # Refused, reset, closed, timed out, or a body cut short while streaming.
    if isinstance(exc, (EndpointError, HTTPClientError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or exc.response.get("Error", {}).get("Code") in TRANSIENT_CODES
    if isinstance(exc, S3UploadFailedError):  # upload_file's wrapper: judge what it wraps
        return transient(exc.__cause__ or exc.__context__)
    return False


def retrying(fn: Callable[[], T], *, what: str, budget: float) -> T:
    """Run `fn` (one whole request: a retry starts it again from the beginning)."""
    deadline = time.monotonic() + budget
    pause = FIRST_PAUSE
    while True:
        try:
            return fn()
        except Exception as exc:
            if not transient(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise StorageUnavailable(f"object storage did not answer for {budget:.0f} s while trying to "
                                         f"{what} ({type(exc).__name__}: {exc})") from exc
            log.warning("object storage: %s failed (%s); retrying in %.1f s", what, exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)
