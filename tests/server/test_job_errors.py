"""The core's JobError family becomes an HTTP answer in one place (server/errors.py)."""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request

from hubtune.crypto import SecretUnreadable
from hubtune.errors import JobError
from server.errors import _job_error

REQUEST = Request({"type": "http", "method": "POST", "path": "/v1/fine_tuning/jobs", "headers": [],
                   "query_string": b""})


def _answer(exc: JobError):
    response = asyncio.run(_job_error(REQUEST, exc))
    return response.status_code, json.loads(response.body)["error"], response.headers


def test_each_code_gets_its_status_and_headers_and_the_rest_are_400():
    status, body, headers = _answer(JobError("too_many_queued_jobs", "wait", None))
    assert (status, headers["retry-after"], headers["x-should-retry"]) == (429, "60", "false")
    assert body == {"message": "wait", "type": "invalid_request_error", "param": None, "code": "too_many_queued_jobs"}
    assert _answer(JobError("still_stopping", "soon"))[0] == 409
    assert _answer(JobError("still_stopping", "soon"))[2]["retry-after"] == "5"
    assert _answer(JobError("conflict", "changing"))[0] == 409
    assert _answer(JobError("forbidden", "no", "priority"))[:2] == (
        403, {"message": "no", "type": "invalid_request_error", "param": "priority", "code": "forbidden"})
    assert _answer(JobError("invalid_state", "no", "fine_tuning_job_id"))[0] == 400


def test_a_server_fault_in_the_family_answers_the_plain_500():
    status, body, _ = _answer(SecretUnreadable("cannot decrypt with /data/secret.key"))
    assert status == 500 and body == {"message": "The server had an error while processing your request.",
                                      "type": "server_error", "param": None, "code": None}
