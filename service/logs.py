"""Structured logs: one JSON object a line, carrying the request id where there is one."""

from __future__ import annotations

import json
import logging
import sys
import time

from service.schemas import REQUEST_ID

# Characters that end a line for str.splitlines() and for many log tools, though JSON lets them
# stand unescaped in a string: escaped, so that one record stays one line whatever a client puts
# in a path (a fuzzer's model name in /v2/models/{name}/infer found it).
_LINE_BREAKS = {c: f"\\u{c:04x}" for c in (0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or REQUEST_ID.get()
        if rid != "-":
            out["request_id"] = rid
        for k in ("method", "path", "status", "duration_ms", "client", "event"):
            v = getattr(record, k, None)
            if v is not None:
                out[k] = v
        if record.exc_info:
            out["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False).translate(_LINE_BREAKS)


def configure(level: str | int = "info", *_, **__) -> None:
    """JSON lines on stderr for our loggers, LitServe's and uvicorn's (signature fits LitServe's hook)."""
    if isinstance(level, str):
        level = getattr(logging, level.upper())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("", "litserve", "uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler] if name in ("", "litserve") else []
        lg.setLevel(level)
        lg.propagate = name != "litserve"
    logging.getLogger("uvicorn.access").disabled = True  # the HTTP middleware logs each request itself
