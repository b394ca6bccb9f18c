"""Error handlers: every error is JSON `{"detail": ...}` saying what to fix (`{"error": ...}` on
the Open Inference Protocol's /v2 routes), never echoing the input back, and an unexpected one is
a 500 that names only the request id (the log has the rest)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.batching.fast_path import INTERNAL_ERROR, timeout_detail

log = logging.getLogger("service")
EXAMPLE_BODY = '{"texts": ["..."]}'
MAX_ERRORS = 10  # validation errors listed in one 422


def explain(e: dict[str, Any]) -> dict[str, Any]:
    """One pydantic/FastAPI validation error as {loc, msg, type}, the message saying what to fix."""
    loc, kind, msg = list(e.get("loc", ())), e.get("type", ""), str(e.get("msg", ""))
    if kind == "json_invalid":
        pos = f" at character {loc[1]}" if len(loc) > 1 else ""
        reason = (e.get("ctx") or {}).get("error", "invalid JSON")
        msg = f"request body is not valid JSON ({reason}{pos}); send a JSON object such as {EXAMPLE_BODY}"
        loc = ["body"]
    elif kind == "missing" and loc == ["body"]:
        msg = f"request body is empty; send a JSON object such as {EXAMPLE_BODY}"
    elif kind == "model_attributes_type" and loc == ["body"]:
        msg = f"request body must be a JSON object such as {EXAMPLE_BODY}"
    elif kind == "missing":
        msg = f"field {'.'.join(map(str, loc[1:]))} is required"
    elif kind == "extra_forbidden":
        msg = f"unknown field {'.'.join(map(str, loc[1:]))}; remove it (see /docs for the request schema)"
    else:
        msg = msg.removeprefix("Value error, ")
    return {"loc": loc, "msg": msg, "type": kind}


def _unparsable(cause: BaseException | None) -> str:
    """Why json.loads failed with something other than a syntax error."""
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number has too many digits"
    return "it cannot be parsed"


def _oip(request: Request) -> bool:
    path = request.url.path
    return path == "/v2" or path.startswith("/v2/")


def add_error_handlers(app: FastAPI, request_timeout: float) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if _oip(request):
            first = explain(exc.errors()[0]) if exc.errors() else {"msg": "invalid request"}
            return JSONResponse({"error": first["msg"]}, status_code=400)
        # Never echo the input back (it may be megabytes, or private); say where and what, for the
        # first few errors only (64 texts of the wrong type would otherwise make 64 entries).
        errors = exc.errors()
        detail = [explain(e) for e in errors[:MAX_ERRORS]]
        if len(errors) > MAX_ERRORS:
            detail.append(
                {
                    "loc": ["body"],
                    "msg": f"and {len(errors) - MAX_ERRORS} more errors like these",
                    "type": "more_errors",
                }
            )
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail, status = exc.detail, exc.status_code
        if _oip(request):
            return JSONResponse({"error": str(detail)}, status_code=status, headers=exc.headers)
        if status == 504:  # LitServe: the request waited in the queue past the timeout
            detail = timeout_detail(request_timeout)
        elif status == 400 and request.url.path.startswith("/v1/"):
            # FastAPI's answer when json.loads fails with something other than a syntax error:
            # nesting deeper than the parser's recursion limit, an integer of more than 4300
            # digits. Malformed JSON is a 422 like any other (as documented), saying what is wrong.
            msg = f"request body is not valid JSON ({_unparsable(exc.__cause__)}); send a JSON object such as {EXAMPLE_BODY}"
            return JSONResponse({"detail": [{"loc": ["body"], "type": "json_invalid", "msg": msg}]}, status_code=422)
        return JSONResponse({"detail": detail}, status_code=status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse({"error" if _oip(request) else "detail": INTERNAL_ERROR}, status_code=500)
