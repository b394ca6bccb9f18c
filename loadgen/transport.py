"""How the load engine talks HTTP: `await transport.request(method, path, body) -> Reply`, two ways.

    async with make_transport("raw", "http://127.0.0.1:8000") as t:
        reply = await t.request("POST", "/v1/sentiment", b'{"texts": ["A fine film."]}')
        reply.status, reply.body                               # 200, b'{"results": ...}'

- `RawTransport` (`--transport raw`; what bench/ uses, and `python -m loadgen` for http URLs):
  keep-alive HTTP/1.1 over asyncio streams, plain http only. It exists because a client measuring
  a server takes CPU from the machine, often the server's own: on this 2-core machine, 1024
  sentiment requests from 32 callers cost the client 0.06 ms of CPU each this way and 2.8 ms
  each through httpx, which then capped throughput at ~85 req/s where the server gave 300-500.
- `HttpxTransport` (`--transport httpx`; `python -m loadgen`'s choice for https URLs): httpx's
  connection pool; http or https, proxies from the environment, anything a deployment may sit
  behind, at that CPU cost.

Both raise `TimeoutError` when no answer comes within `timeout` seconds and `ConnectionError`
when the connection fails or closes early, so that the engine counts failures the same way
whichever is used. Neither raises on an HTTP error status: that is the caller's to judge.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Protocol
from urllib.parse import urlsplit

import httpx

from service import __version__
from service.oip.tensors import GRPC_CODES

TRANSPORTS = ("httpx", "raw")
AUTO = "auto"  # raw for http URLs, httpx for https
_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+
JSON = "application/json"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


class Transport(Protocol):
    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply: ...

    async def aclose(self) -> None: ...


class _Closing:
    """`async with transport:` closes it on the way out."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> _Closing:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": f"rnn-serve-loadgen/{__version__}", "accept": JSON}
    if api_key:
        headers["x-api-key"] = api_key
    return headers


class HttpxTransport(_Closing):
    """httpx.AsyncClient with a pool of `connections` keep-alive connections."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0, connections: int = 100):
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key),
            timeout=timeout,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        try:
            extra = {"content-type": JSON} if body is not None else {}
            r = await self._http.request(method, path, content=body, headers={**extra, **(headers or {})})
        except httpx.TimeoutException as e:
            raise TimeoutError(f"{method} {path}: {type(e).__name__}") from e
        except httpx.TransportError as e:
            raise ConnectionError(f"{method} {path}: {type(e).__name__} {e}") from e
        return Reply(r.status_code, r.content)

    async def aclose(self) -> None:
        await self._http.aclose()


class RawTransport(_Closing):
    """Keep-alive HTTP/1.1 on asyncio streams: a connection per request in flight, reused most
    recently used first. A connection idle for longer than MAX_IDLE is closed rather than reused:
    the server closes idle ones after 5 s (uvicorn's keep-alive timeout), and a request sent on
    one it is closing would be lost to the client's race, not to the server."""

    MAX_IDLE = 3.0

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0):
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"the raw transport speaks plain http only, not {base_url!r} (use --transport httpx)")
        self.host, self.port, self.timeout = url.hostname, url.port or 80, timeout
        self._prefix = url.path.rstrip("/")
        fixed = {"host": url.netloc, **_headers(api_key)}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._idle: collections.deque[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = collections.deque()

    def _encode(self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None = None) -> bytes:
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._head}"
        extra = dict(headers or {})
        if body is not None:
            head += f"content-type: {extra.pop('content-type', JSON)}\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
        return head.encode() + b"\r\n" + (body or b"")

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self._idle and now - self._idle[0][2] > self.MAX_IDLE:  # the oldest first
            self._idle.popleft()[1].close()
        if self._idle:
            reader, writer, _ = self._idle.pop()
            return reader, writer
        return await asyncio.open_connection(self.host, self.port)

    async def _exchange(self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None) -> Reply:
        reader, writer = await self._connection()
        try:
            writer.write(self._encode(method, path, body, headers))
            status, keep_alive, data = await _read_response(reader)
        except BaseException:
            writer.close()
            raise
        if keep_alive:
            self._idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return Reply(status, data)

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        try:
            if _timeout is None:  # Python 3.10
                return await asyncio.wait_for(self._exchange(method, path, body, headers), self.timeout)
            async with _timeout(self.timeout):  # no task per request, unlike wait_for: less client CPU
                return await self._exchange(method, path, body, headers)
        except asyncio.TimeoutError as e:  # not the builtin TimeoutError before Python 3.11
            raise TimeoutError(f"{method} {path}: no answer within {self.timeout:g} s") from e
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            raise ConnectionError(f"{method} {path}: {type(e).__name__} {e}") from e

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop()[1].close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """(status, whether the connection stays open, body) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length, chunked, keep_alive = 0, False, True
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"transfer-encoding":
            chunked = b"chunked" in v.lower()
        elif k == b"connection":
            keep_alive = v.strip().lower() != b"close"
    if not chunked:
        return status, keep_alive, await reader.readexactly(length)
    parts = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
        pass
    return status, keep_alive, b"".join(parts)


class GrpcTransport(_Closing):
    """gRPC unary calls on one channel, bodies as serialized messages both ways (no protobuf work
    on the client: the load's bodies are serialized once, before the run). `path` is the method,
    e.g. /inference.GRPCInferenceService/ModelInfer; an error status comes back as the HTTP status
    the server's metrics give it (service.oip.tensors.GRPC_CODES), so the engine counts it like any other."""

    # gRPC code name -> HTTP status; RESOURCE_EXHAUSTED counts as 429 (the queue), not 413
    STATUS: ClassVar[dict[str, int]] = {name: status for status, name in sorted(GRPC_CODES.items())}

    def __init__(self, target: str, *, api_key: str | None = None, timeout: float = 60.0):
        import grpc.aio

        self._grpc = grpc
        self._channel = grpc.aio.insecure_channel(target)
        self._metadata = (("x-api-key", api_key),) if api_key else None
        self._methods: dict[str, object] = {}
        self.timeout = timeout

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        call = self._methods.get(path)
        if call is None:
            call = self._methods[path] = self._channel.unary_unary(path)  # bytes in, bytes out
        try:
            data = await call(body or b"", timeout=self.timeout, metadata=self._metadata)  # type: ignore[operator]
        except self._grpc.aio.AioRpcError as e:
            if e.code() == self._grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(f"{path}: no answer within {self.timeout:g} s") from e
            if e.code() == self._grpc.StatusCode.UNAVAILABLE and "connect" in (e.details() or "").lower():
                raise ConnectionError(f"{path}: {e.details()}") from e
            return Reply(self.STATUS.get(e.code().name, 500), (e.details() or "").encode())
        return Reply(200, data)

    async def aclose(self) -> None:
        await self._channel.close()


def make_transport(
    kind: str, base_url: str, *, api_key: str | None = None, timeout: float = 60.0, connections: int = 100
) -> HttpxTransport | RawTransport:
    """`kind` is one of TRANSPORTS or "auto"; `connections` bounds httpx's pool (the raw one opens
    a connection per request in flight)."""
    if kind == AUTO:
        kind = "raw" if urlsplit(base_url).scheme == "http" else "httpx"
    if kind == "httpx":
        return HttpxTransport(base_url, api_key=api_key, timeout=timeout, connections=connections)
    if kind == "raw":
        return RawTransport(base_url, api_key=api_key, timeout=timeout)
    raise ValueError(f"transport must be one of {(AUTO, *TRANSPORTS)}, not {kind!r}")
