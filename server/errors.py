"""Errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`.

Routes raise `ApiError`; the core's job rules raise `hubtune.errors.JobError`, whose HTTP status is
decided here alone (JOB_ERROR_STATUS). The handlers installed by `install_error_handlers` turn both,
FastAPI's request validation errors, Starlette's 404/405 and anything unexpected into that shape, so
that a client never sees FastAPI's default 422 body.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hubtune.errors import JobError
from hubtune.jobs import QUEUED_LIMIT_RETRY_AFTER, STILL_STOPPING_RETRY_AFTER
from hubtune.storage import StorageUnavailable

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"


class ApiError(Exception):
    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = INVALID_REQUEST,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = headers


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(what: str, object_id: str, *, param: str | None = None) -> ApiError:
    # The same answer whether the object does not exist or belongs to someone else: never a 403.
    return ApiError(404, f"No such {what}: {object_id}", param=param, code=f"{what.replace(' ', '_')}_not_found")


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def error_body(message: str, *, type: str = INVALID_REQUEST, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(
    status_code: int,
    message: str,
    *,
    type: str = INVALID_REQUEST,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(message, type=type, param=param, code=code), status_code=status_code, headers=headers
    )


# --- the core's JobError -> HTTP: the one table ------------------------------------------------------

# code -> (status, headers); any other code is a 400 (a request that breaks a rule).
JOB_ERROR_STATUS: dict[str, tuple[int, dict[str, str] | None]] = {
    "forbidden": (403, None),
    "conflict": (409, None),  # the job is changing state
    "still_stopping": (409, {"Retry-After": str(STILL_STOPPING_RETRY_AFTER)}),
    # `x-should-retry: false`: the limit lifts only when one of the owner's jobs starts, not in the
    # seconds a client would wait.
    "too_many_queued_jobs": (429, {"Retry-After": str(QUEUED_LIMIT_RETRY_AFTER), "x-should-retry": "false"}),
    # The operator's to fix (HUBTUNE_SECRET_KEY differs between machines): logged, and the client gets
    # the plain 500 of any server fault. A job failing on it keeps the code (worker/failures.py).
    "secret_unreadable": (500, None),
}


def from_job_error(exc: JobError) -> ApiError:
    status, headers = JOB_ERROR_STATUS.get(exc.code, (400, None))
    return ApiError(status, exc.message, param=exc.param, code=exc.code, headers=headers)


# --- request validation errors -> one OpenAI error naming the offending parameter -------------------

_LOCATIONS = {"body", "query", "path", "header", "cookie"}
# Pydantic puts the name of the union member that failed into `loc` (e.g. "literal['auto']",
# "constrained-int", "list[str]"); those are not part of the user's parameter path.
_TAG = re.compile(r"^(?:[a-z-]+\[.*\]|constrained-[a-z]+|function-[a-z]+|lax-[a-z]+|json-or-python)$")
_TYPE_NAMES = {"int", "float", "str", "bool", "bytes", "none", "list", "dict", "decimal", "set", "tuple"}


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and (part in _TYPE_NAMES or bool(_TAG.match(part)))


def param_path(loc: tuple | list, *, keep_last: bool = False) -> str | None:
    """("body", "tuning", "target_modules", 0) -> "tuning.target_modules[0]"; None for the whole body."""
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    out = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if _is_tag(part) and not (keep_last and last):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or None


def _clean_msg(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _guess_param(msg: str, fields: tuple[str, ...]) -> str | None:
    """A model-level validator error names no location; take the first field its message mentions."""
    for word in re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", msg):
        if word in fields:
            return word
    return None


JOB_FIELDS = (
    "training_file", "validation_file", "model", "suffix", "seed", "method", "hyperparameters",
    "metadata", "integrations", "task", "tuning", "training", "hub", "webhook_url", "priority",
)


def validation_error(errors: list[dict[str, Any]]) -> ApiError:
    """Turn pydantic/FastAPI error dicts into one 400 ApiError: `param` is the first dotted path."""
    unknown: list[str] = []
    invalid: dict[str | None, list[str]] = {}
    for err in errors:
        kind = err.get("type", "")
        loc = tuple(err.get("loc", ()))
        msg = _clean_msg(str(err.get("msg", "invalid value")))
        if kind == "json_invalid":
            detail = (err.get("ctx") or {}).get("error") or msg
            return ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
                f"your HTTP library correctly. The server expects a JSON payload: {detail}.)",
                code="invalid_json",
            )
        if kind == "extra_forbidden":
            unknown.append(param_path(loc, keep_last=True) or "?")
            continue
        param = param_path(loc)
        if param is None and kind == "missing" and loc[:1] == ("body",):
            return ApiError(400, "The request body is missing; send a JSON object.", code="missing_body")
        if param is None and kind in ("model_type", "model_attributes_type", "dict_type"):
            return ApiError(400, "The request body must be a JSON object.", code="invalid_body")
        if param is None:
            param = _guess_param(msg, JOB_FIELDS)
        if kind == "missing":
            msg = "Missing required parameter"
        invalid.setdefault(param, [])
        if msg not in invalid[param]:
            invalid[param].append(msg)
    parts: list[str] = []
    first_param: str | None = None
    code = "invalid_value"
    if unknown:
        first_param = unknown[0]
        code = "unknown_parameter"
        noun = "argument" if len(unknown) == 1 else "arguments"
        parts.append(f"Unrecognized request {noun} supplied: {', '.join(unknown)}")
    for param, msgs in invalid.items():
        if first_param is None and not unknown:
            first_param = param
        what = "; or ".join(msgs)
        if msgs == ["Missing required parameter"]:
            parts.append(f"Missing required parameter: '{param}'" if param else "Missing required parameter")
            if param == first_param:
                code = "missing_required_parameter"
        else:
            parts.append(f"Invalid value for '{param}': {what}" if param else f"Invalid request: {what}")
    return ApiError(400, ". ".join(p.rstrip(".") for p in parts) + ".", param=first_param, code=code)


# --- handlers ---------------------------------------------------------------------------------------


async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return error_response(
        exc.status_code, exc.message, type=exc.type, param=exc.param, code=exc.code, headers=exc.headers
    )


async def _job_error(request: Request, exc: JobError) -> JSONResponse:
    error = from_job_error(exc)
    if error.status_code >= 500:
        return await _unexpected(request, exc)
    return await _api_error(request, error)


async def _request_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return await _api_error(_request, validation_error(list(exc.errors())))


async def _http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
        code = "not_found"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed for {request.url.path}"
        code = "method_not_allowed"
    else:
        message = str(exc.detail)
        code = "invalid_request" if exc.status_code == 400 else None
    kind = "server_error" if exc.status_code >= 500 else INVALID_REQUEST
    return error_response(exc.status_code, message, type=kind, code=code, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "The server had an error while processing your request.", type="server_error")


async def _storage_unavailable(_request: Request, exc: StorageUnavailable) -> JSONResponse:
    # Object storage did not answer within its retry budget: nothing was stored, the request may be
    # sent again (the openai client retries a 503 on its own).
    log.warning("artifact storage unavailable: %s", exc)
    return error_response(503, "Artifact storage is unreachable right now; nothing was stored. Retry shortly.",
                          type="server_error", code="storage_unavailable", headers={"Retry-After": "30"})


async def _data_error(request: Request, exc: DataError) -> JSONResponse:
    # The last line of defence for a text value PostgreSQL cannot store (NUL) that no field check caught.
    if "NUL" in str(exc.orig):
        return error_response(400, "Text values may not contain NUL characters.", code="invalid_value")
    return await _unexpected(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(JobError, _job_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(StorageUnavailable, _storage_unavailable)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)


# --- the error responses in the OpenAPI schema ------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: `{"error": {message, type, param, code}}`."""

    error: ErrorDetail


_ERROR_STATUSES = {
    400: "Invalid request: `param` names the offending field or header",
    401: "Missing or invalid API key",
    403: "The key may not do this (admin only, or a dashboard action without its CSRF token)",
    404: "No such object, or it belongs to another owner",
    409: "Conflict: the object is changing state, or an Idempotency-Key reused with another body",
    413: "The upload is larger than the server's limit",
    429: "Rate limit or per-owner job limit reached; see Retry-After",
    500: "Server error",
    503: "Artifact storage is unreachable; nothing was stored, retry later (Retry-After)",
}
# Documented for every route (app-wide), so that clients and schema checkers know the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in _ERROR_STATUSES.items()
}


def drop_validation_422(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 with its own body on every route with parameters; this app answers a
    validation error with a 400 in the OpenAI shape instead, so the 422 entries are removed."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    return schema
