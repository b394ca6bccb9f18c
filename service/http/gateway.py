"""The HTTP edge, in front of LitServe's routes (pure ASGI, outermost middleware).

For every request: an X-Request-ID (the client's, if sane, else a new one) on the response and
in the logs, one JSON log line, request metrics, and a JSON 500 that names the request id but
shows nothing of the error (the log has the traceback) when something inside fails. For /v1/*
additionally, before anything reaches a worker: API key (constant-time comparison), 503 once an
inference worker has died (the server is going down to be restarted), Content-Type, body size
(413), the bounded queue (429 + Retry-After; a request takes its slot before its body is read,
so at most max_queue bodies are ever held), UTF-8 validity, the request deadline (504), and a
503 for a request still running when the SIGTERM grace period ends. Then a body that validates
goes straight onto the inference workers' queue (`fast`, batching.fast_path); any other goes to
LitServe's FastAPI route, which says what to fix. Every request is handled with the server's
limits in its context (schemas.REQUEST_LIMITS), where the request schemas read them.
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
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics as M
from service.batching.watchdog import WORKER_LOST, ServiceState
from service.schemas import REQUEST_ID, REQUEST_LIMITS, Limits
from service.settings import Settings

log = logging.getLogger("service.http")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


async def _reply(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    await _send_json(send, status, json.dumps({"detail": detail}).encode(), headers or {})


async def _send_json(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read by the gateway, handed to the app as one message."""
    replayed = False

    async def receive_() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_


SHUTTING_DOWN = "the server is shutting down and could not finish this request within its grace period: retry"


class Gateway:
    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        limits: Limits | None = None,
        state: ServiceState | None = None,
        fast: Callable[[str, bytes], Awaitable[tuple[int, bytes, dict[str, str]] | None]] | None = None,
    ):
        self.app = app
        self.fast = fast  # batching.fast_path.FastPath: valid /v1 bodies straight to the workers' queue
        self.s = settings
        self.limits = limits or settings.limits()
        self.state = state or ServiceState()
        self.key = settings.api_key.get_secret_value().encode() if settings.api_key else None
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        rid = given if _SANE_ID.match(given) else uuid.uuid4().hex
        token, limits_token = REQUEST_ID.set(rid), REQUEST_LIMITS.set(self.limits)
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
        except Exception:
            # Whatever failed inside: the traceback goes to the log with the request id, never to
            # the client (Starlette's own last-resort handler would answer without the id).
            log.exception("unhandled error", extra={"event": "internal_error", "request_id": rid})
            if not state["started"]:
                await _reply(send_, 500, "internal error; the request id is in the X-Request-ID header")
        finally:
            dt = time.perf_counter() - t0
            label = (
                endpoint
                if endpoint in ("sentiment", "translate")
                else ("other" if endpoint else path if path in ("/health", "/info", "/metrics") else "other")
            )
            protocol = "v1" if endpoint else "http"
            M.REQUESTS.labels(label, str(state["status"]), protocol).inc()
            if endpoint:
                M.REQUEST_LATENCY.labels(label, protocol).observe(dt)
            if path != "/metrics" and path != "/health":
                shown = path if len(path) <= 200 else f"{path[:200]}...({len(path)} characters)"
                log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": shown,
                        "status": state["status"],
                        "duration_ms": round(dt * 1000, 2),
                        "request_id": rid,
                    },
                )
            REQUEST_ID.reset(token)
            REQUEST_LIMITS.reset(limits_token)

    async def _v1(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, endpoint: str, state: dict
    ) -> None:
        if self.key is not None:
            given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), self.key):
                M.REJECTED.labels(endpoint, "unauthorized").inc()
                await _reply(
                    send,
                    401,
                    "missing or wrong API key: send it in the X-API-Key header",
                    {"www-authenticate": "ApiKey"},
                )
                return
        if self.state.failure is not None:
            M.REJECTED.labels(endpoint, "worker_lost").inc()
            await _reply(send, 503, WORKER_LOST, {"retry-after": "1"})
            return
        post = scope["method"] == "POST"
        if post:
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                await _reply(send, 415, f"Content-Type must be application/json (got {ctype or 'none'!r})")
                return
            declared = headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.s.max_payload_bytes:
                M.REJECTED.labels(endpoint, "too_large").inc()
                await _reply(send, 413, f"request body is {declared} bytes; the limit is {self.s.max_payload_bytes}")
                return
        if self.in_flight[endpoint] >= self.s.max_queue:
            # Full: refuse without buffering the body. It is read and dropped, chunk by chunk: a
            # client still sending it would otherwise see the connection close, not the answer.
            M.REJECTED.labels(endpoint, "queue_full").inc()
            if post:
                await self._drain(receive)
            await _reply(
                send,
                429,
                f"server busy: {self.s.max_queue} requests already queued; retry shortly",
                {"retry-after": "1"},
            )
            return
        # The slot is taken before the body is read: at most max_queue bodies are held in memory,
        # however many requests arrive at once.
        self.in_flight[endpoint] += 1
        M.IN_FLIGHT.labels(endpoint).inc()
        try:
            body = await self._read_body(receive, send, endpoint) if post else None
            if post and body is None:  # answered (413, 422) or the client went away
                return
            await asyncio.wait_for(self._forward(scope, receive, send, endpoint, body), self.s.request_timeout + 5)
        except asyncio.TimeoutError:
            M.REJECTED.labels(endpoint, "timeout").inc()
            if not state["started"]:
                await _reply(send, 504, f"request not answered within {self.s.request_timeout + 5:.0f} s; retry later")
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when the shutdown grace period (SIGTERM) ends:
            # say so (503, retry elsewhere) rather than let uvicorn answer a bare 500.
            M.REJECTED.labels(endpoint, "shutdown").inc()
            if not state["started"]:
                await _reply(send, 503, SHUTTING_DOWN, {"retry-after": "1"})
        finally:
            self.in_flight[endpoint] -= 1
            M.IN_FLIGHT.labels(endpoint).dec()

    async def _forward(self, scope: Scope, receive: Receive, send: Send, endpoint: str, body: bytes | None) -> None:
        """A body that validates straight to the workers (the fast path); the rest to the app."""
        if body is not None and self.fast is not None:
            reply = await self.fast(endpoint, body)
            if reply is not None:
                await _send_json(send, *reply)
                return
        await self.app(scope, receive if body is None else _replay(body, receive), send)

    async def _read_body(self, receive: Receive, send: Send, endpoint: str) -> bytes | None:
        """The whole body; None once answered (413 past the limit, 422 if not UTF-8) or disconnected."""
        body, more = bytearray(), True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.s.max_payload_bytes:
                M.REJECTED.labels(endpoint, "too_large").inc()
                await _reply(send, 413, f"request body exceeds the limit of {self.s.max_payload_bytes} bytes")
                return None
        data = bytes(body)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            await _reply(send, 422, f"request body is not valid UTF-8 (byte {e.start}); encode text as UTF-8 JSON")
            return None
        return data

    async def _drain(self, receive: Receive) -> None:
        """Read and drop a request body (up to the payload limit)."""
        seen, more = 0, True
        while more and seen <= self.s.max_payload_bytes:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            seen += len(msg.get("body", b""))
            more = msg.get("more_body", False)
