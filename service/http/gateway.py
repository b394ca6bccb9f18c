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
import json
import logging
import time
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics as M
from service.admission import Admission, Refusal, presented_key
from service.batching.fair import CLIENT, client_id
from service.batching.watchdog import ServiceState
from service.oip.rest import HEADER_LENGTH, OipRest, decode_body, error_body, infer_target
from service.oip.tensors import OipError
from service.schemas import REQUEST_ID, REQUEST_LIMITS, Limits, request_id
from service.settings import Settings

log = logging.getLogger("service.http")


FAMILIES = ("sentiment", "translate")


async def _error(send: Send, protocol: str, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """An error in the protocol's form: {"error": ...} on /v2 (OIP), {"detail": ...} elsewhere."""
    body = error_body(message) if protocol == "v2" else json.dumps({"detail": message}).encode()
    await _send(send, status, body, headers or {})


async def _refuse(send: Send, protocol: str, refusal: Refusal) -> None:
    await _error(send, protocol, refusal.status, refusal.message, refusal.headers)


async def _send(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    """A whole response; Content-Type application/json unless `headers` names one."""
    hdrs = [(b"content-length", str(len(body)).encode())]
    if not any(k.lower() == "content-type" for k in headers):
        hdrs.append((b"content-type", b"application/json"))
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

# What answers an inference request once admitted: the body read (None for a GET) ->
# (status, body, headers), or None to hand the request to the app (FastAPI).
Answer = Callable[[bytes | None], Awaitable[tuple[int, bytes, dict[str, str]] | None]]


class Gateway:
    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        limits: Limits | None = None,
        state: ServiceState | None = None,
        fast: Callable[[str, bytes], Awaitable[tuple[int, bytes, dict[str, str]] | None]] | None = None,
        admission: Admission | None = None,
        oip: OipRest | None = None,
    ):
        self.app = app
        self.fast = fast  # batching.fast_path.FastPath: valid /v1 bodies straight to the workers' queue
        self.oip = oip  # oip.rest.OipRest: /v2 inference
        self.s = settings
        self.limits = limits or settings.limits()
        self.state = state or ServiceState()
        self.admission = admission or Admission(settings, self.state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        rid = request_id(headers.get("x-request-id", ""))
        token, limits_token = REQUEST_ID.set(rid), REQUEST_LIMITS.set(self.limits)
        path: str = scope["path"]
        state = {"status": 500, "started": False}

        async def send_(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                state["status"], state["started"] = msg["status"], True
                MutableHeaders(scope=msg)["x-request-id"] = rid
            await send(msg)

        protocol, label = "http", path if path in ("/health", "/info", "/metrics") else "other"
        t0 = time.perf_counter()
        try:
            if path.startswith("/v1/"):
                protocol, label = "v1", path[4:]
                await self._v1(scope, receive, send_, headers, label, state)
            elif path == "/v2" or path.startswith("/v2/"):
                protocol = "v2"
                label = await self._v2(scope, receive, send_, headers, path, state)
            else:
                await self.app(scope, receive, send_)
        except Exception:
            # Whatever failed inside: the traceback goes to the log with the request id, never to
            # the client (Starlette's own last-resort handler would answer without the id).
            log.exception("unhandled error", extra={"event": "internal_error", "request_id": rid})
            if not state["started"]:
                await _error(send_, protocol, 500, "internal error; the request id is in the X-Request-ID header")
        finally:
            dt = time.perf_counter() - t0
            inference = label in ("sentiment", "translate")
            if protocol == "v1" and not inference:
                label = "other"
            M.REQUESTS.labels(label, str(state["status"]), protocol).inc()
            if protocol in ("v1", "v2") and (inference or protocol == "v1"):
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
        async def answer(body: bytes | None) -> tuple[int, bytes, dict[str, str]] | None:
            if body is not None and self.fast is not None:
                return await self.fast(endpoint, body)
            return None

        if self.fast is not None and endpoint in FAMILIES and endpoint not in self.fast.models:
            # a model family this server was started without (its models dir has no such artifact)
            folder = "sentiment/" if endpoint == "sentiment" else "translate-xx-yy/"
            await _error(
                send,
                "v1",
                404,
                f"this server has no {endpoint} model (its models directory has no {folder}); /info lists what it serves",
            )
            return
        await self._admit(scope, receive, send, headers, endpoint, state, "v1", answer)

    async def _v2(self, scope: Scope, receive: Receive, send: Send, headers: Headers, path: str, state: dict) -> str:
        """OIP over HTTP: inference through the same checks as /v1; the rest to the app. The metrics label."""
        if path.startswith("/v2/health/"):
            await self.app(scope, receive, send)
            return "/v2/health"
        if not path.startswith("/v2/models/") or self.oip is None:
            await self.app(scope, receive, send)
            return "other"
        target = infer_target(path)
        if target is None or scope["method"] != "POST":
            refusal = self.admission.check("other", presented_key(headers.get))
            if refusal is not None:
                await _refuse(send, "v2", refusal)
            else:
                await self.app(scope, receive, send)
            return "other"
        name, version = target
        model = self.oip.registry.models.get(name)
        endpoint = model.family if model is not None else "other"
        oip = self.oip
        length = headers.get(HEADER_LENGTH)

        async def answer(body: bytes | None) -> tuple[int, bytes, dict[str, str]]:
            return await oip.infer(name, version, length, body or b"")

        await self._admit(scope, receive, send, headers, endpoint, state, "v2", answer)
        return endpoint

    async def _admit(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: Headers,
        endpoint: str,
        state: dict,
        protocol: str,
        answer: Answer,
    ) -> None:
        """The checks every inference request passes, then `answer` (or the app) within the deadline."""
        refusal = self.admission.check(endpoint, presented_key(headers.get))
        if refusal is not None:
            await _refuse(send, protocol, refusal)
            return
        post = scope["method"] == "POST"
        if post:
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if protocol == "v1" and ctype != "application/json":
                await _error(send, protocol, 415, f"Content-Type must be application/json (got {ctype or 'none'!r})")
                return
            declared = headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.s.max_payload_bytes:
                M.REJECTED.labels(endpoint, "too_large").inc()
                await _error(
                    send, protocol, 413, f"request body is {declared} bytes; the limit is {self.s.max_payload_bytes}"
                )
                return
        # The slot is taken before the body is read: at most max_queue bodies are held in memory,
        # however many requests arrive at once.
        refusal = self.admission.enter(endpoint)
        if refusal is not None:
            # Full: refuse without buffering the body. It is read and dropped, chunk by chunk: a
            # client still sending it would otherwise see the connection close, not the answer.
            if post:
                await self._drain(receive)
            await _refuse(send, protocol, refusal)
            return
        client = CLIENT.set(client_id(headers.get("x-client-id")))  # whom the fair scheduler counts it against
        try:
            body = await self._read_body(receive, send, endpoint, protocol) if post else None
            if post and body is None:  # answered (413, 422) or the client went away
                return
            if body is not None and protocol == "v2":  # Triton's clients may compress the request
                try:
                    body = decode_body(body, headers.get("content-encoding", ""), self.s.max_payload_bytes)
                except OipError as e:
                    await _error(send, protocol, e.status, e.message)
                    return
            await asyncio.wait_for(self._forward(scope, receive, send, body, answer), self.s.request_timeout + 5)
        except asyncio.TimeoutError:
            M.REJECTED.labels(endpoint, "timeout").inc()
            if not state["started"]:
                await _error(
                    send, protocol, 504, f"request not answered within {self.s.request_timeout + 5:.0f} s; retry later"
                )
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when the shutdown grace period (SIGTERM) ends:
            # say so (503, retry elsewhere) rather than let uvicorn answer a bare 500.
            M.REJECTED.labels(endpoint, "shutdown").inc()
            if not state["started"]:
                await _error(send, protocol, 503, SHUTTING_DOWN, {"retry-after": "1"})
        finally:
            CLIENT.reset(client)
            self.admission.leave(endpoint)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, body: bytes | None, answer: Answer) -> None:
        """`answer`'s reply (the fast paths); else the app's."""
        reply = await answer(body)
        if reply is not None:
            await _send(send, *reply)
            return
        await self.app(scope, receive if body is None else _replay(body, receive), send)

    async def _read_body(self, receive: Receive, send: Send, endpoint: str, protocol: str) -> bytes | None:
        """The whole body; None once answered (413 past the limit, 422 if not UTF-8 on /v1) or disconnected."""
        body, more = bytearray(), True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.s.max_payload_bytes:
                M.REJECTED.labels(endpoint, "too_large").inc()
                await _error(send, protocol, 413, f"request body exceeds the limit of {self.s.max_payload_bytes} bytes")
                return None
        data = bytes(body)
        if protocol != "v1":  # binary tensors need not be UTF-8: oip.rest checks what must be
            return data
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            await _error(
                send, protocol, 422, f"request body is not valid UTF-8 (byte {e.start}); encode text as UTF-8 JSON"
            )
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
