"""Helpers for the reliability tests (tests/test_reliability_*.py): what became of each request of a
load (answered, refused, cut off). The server's memory comes from bench/proctree.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx


def outcome(r: httpx.Response | BaseException) -> str:
    """A request's fate: its status code, or how the connection failed."""
    if isinstance(r, httpx.Response):
        return str(r.status_code)
    if isinstance(r, httpx.ConnectError):
        return "refused"  # never accepted: nothing listens any more
    if isinstance(r, httpx.TimeoutException):
        return "timeout"
    if isinstance(r, httpx.TransportError):
        return "closed"  # the connection was closed or reset before any response
    raise r


@dataclass
class Load:
    """Requests sent over fresh connections (no keep-alive), each remembered with its request id,
    send and end time and outcome."""

    url: str
    timeout: float = 60
    results: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, client: httpx.AsyncClient, path: str, body: Any, rid: str) -> dict[str, Any]:
        """POST body (JSON-encoded here, or bytes already encoded) with X-Request-ID rid."""
        rec: dict[str, Any] = {"id": rid, "sent": time.monotonic()}
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            r = await client.post(path, content=data, headers={"x-request-id": rid, "content-type": "application/json"})
            rec["response"] = r
        except httpx.TransportError as e:
            r = e
        rec["end"], rec["outcome"] = time.monotonic(), outcome(r)
        self.results.append(rec)
        return rec

    def client(self, connections: int = 2000) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=0)
        return httpx.AsyncClient(base_url=self.url, timeout=self.timeout, limits=limits)

    def counts(self) -> Counter[str]:
        return Counter(r["outcome"] for r in self.results)


def burst(url: str, path: str, bodies: list[Any], timeout: float = 120) -> list[dict[str, Any]]:
    """Every body at once, each on its own connection; the records in request order."""

    async def go() -> list[dict[str, Any]]:
        load = Load(url, timeout)
        async with load.client(len(bodies)) as c:
            return await asyncio.gather(*(load.send(c, path, b, f"burst-{i}") for i, b in enumerate(bodies)))

    return asyncio.run(go())


class BackgroundLoad:
    """A steady stream of requests (a new one every `interval` seconds, each on a fresh
    connection) from a thread of its own, until stop(). `extra` requests can be added meanwhile."""

    def __init__(self, url: str, make: Any, interval: float = 0.05, timeout: float = 120):
        self.load = Load(url, timeout)
        self.make, self.interval = make, interval  # make(i) -> (path, body)
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        async with self.load.client() as self._client:
            self._ready.set()
            i = 0
            while not self._stop.is_set():
                path, body = self.make(i)
                self._tasks.append(asyncio.create_task(self.load.send(self._client, path, body, f"load-{i}")))
                i += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)
            await asyncio.gather(*self._tasks)

    def start(self) -> BackgroundLoad:
        self._thread.start()
        self._ready.wait(30)
        return self

    def add(self, path: str, body: Any, rid: str) -> None:
        """One more request, sent now from the load's thread."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(
            lambda: self._tasks.append(asyncio.create_task(self.load.send(self._client, path, body, rid)))
        )

    def stop(self, timeout: float = 180) -> list[dict[str, Any]]:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "requests still hanging"
        return self.load.results
