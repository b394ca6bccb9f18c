"""The HTTP edge, in front of LitServe's routes (pure ASGI, outermost middleware).

For every request: an X-Request-ID (the client's, if sane, else a new one) on the response and
in the logs, one JSON log line, request metrics. For /v1/* additionally, before anything reaches
a worker: API key (constant-time comparison), Content-Type, body size (413), UTF-8 validity,
the bounded queue (429 + Retry-After) and the request deadline (504).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections import Counter

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics as M
from service.schemas import REQUEST_ID
from service.settings import Settings

log = logging.getLogger("service.http")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


async def _reply(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class Gateway:
    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.s = settings
        self.key = settings.api_key.get_secret_value().encode() if settings.api_key else None
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        rid = given if _SANE_ID.match(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        path: str = scope["path"]
        endpoint = path[4:] if path.startswith("/v1/") else None
        state = {"status": 500, "started": False}

        async def send_(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                state["status"], state["started"] = msg["status"], True
                MutableHeaders(scope=msg)["x-request-id"] = rid
            await send(msg)

        t0 = time.perf_counter()
        try:
            if endpoint is None:
                await self.app(scope, receive, send_)
            else:
                await self._v1(scope, receive, send_, headers, endpoint, state)
        finally:
            dt = time.perf_counter() - t0
            label = endpoint if endpoint in ("sentiment", "translate") else ("other" if endpoint else path if path in ("/health", "/info", "/metrics") else "other")
            M.REQUESTS.labels(label, str(state["status"])).inc()
            if endpoint:
                M.REQUEST_LATENCY.labels(label).observe(dt)
            if path != "/metrics" and path != "/health":
                log.info("request", extra={"method": scope["method"], "path": path, "status": state["status"],
                                           "duration_ms": round(dt * 1000, 2), "request_id": rid})
            REQUEST_ID.reset(token)

    async def _v1(self, scope: Scope, receive: Receive, send: Send, headers: Headers, endpoint: str, state: dict) -> None:
        if self.key is not None:
            given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), self.key):
                M.REJECTED.labels(endpoint, "unauthorized").inc()
                await _reply(send, 401, "missing or wrong API key: send it in the X-API-Key header",
                             {"www-authenticate": "ApiKey"})
                return
        if scope["method"] == "POST":
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                await _reply(send, 415, f"Content-Type must be application/json (got {ctype or 'none'!r})")
                return
            declared = headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.s.max_payload_bytes:
                M.REJECTED.labels(endpoint, "too_large").inc()
                await _reply(send, 413, f"request body is {declared} bytes; the limit is {self.s.max_payload_bytes}")
                return
            body, more = bytearray(), True
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                body += msg.get("body", b"")
                more = msg.get("more_body", False)
                if len(body) > self.s.max_payload_bytes:
                    M.REJECTED.labels(endpoint, "too_large").inc()
                    await _reply(send, 413, f"request body exceeds the limit of {self.s.max_payload_bytes} bytes")
                    return
            try:
                bytes(body).decode("utf-8")
            except UnicodeDecodeError as e:
                await _reply(send, 422, f"request body is not valid UTF-8 (byte {e.start}); encode text as UTF-8 JSON")
                return
            replayed = False

            async def receive_() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": bytes(body), "more_body": False}
                return await receive()
        else:
            receive_ = receive
        if self.in_flight[endpoint] >= self.s.max_queue:
            M.REJECTED.labels(endpoint, "queue_full").inc()
            await _reply(send, 429, f"server busy: {self.s.max_queue} requests already queued; retry shortly",
                         {"retry-after": "1"})
            return
        self.in_flight[endpoint] += 1
        M.IN_FLIGHT.labels(endpoint).inc()
        try:
            await asyncio.wait_for(self.app(scope, receive_, send), timeout=self.s.request_timeout + 5)
        except asyncio.TimeoutError:
            M.REJECTED.labels(endpoint, "timeout").inc()
            if not state["started"]:
                await _reply(send, 504, f"request not answered within {self.s.request_timeout + 5:.0f} s; retry later")
        finally:
            self.in_flight[endpoint] -= 1
            M.IN_FLIGHT.labels(endpoint).dec()
