"""Helpers for the tests that talk to the real server over HTTP: metrics parsing, concurrent
bursts, polling, log reading."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


def metrics(url: str) -> dict[str, list]:
    """/metrics parsed with prometheus_client's parser: family name -> its samples."""
    r = httpx.get(f"{url}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def sample(fams: dict[str, list], name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when there is none)."""
    family = name
    for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
        if name.endswith(suffix) and name.removesuffix(suffix) in fams:
            family = name.removesuffix(suffix)
    return sum(s.value for s in fams.get(family, []) if s.name == name and labels.items() <= s.labels.items())


def in_flight(url: str, endpoint: str) -> float:
    """Requests the server has accepted on `endpoint` and not yet answered (its gauge)."""
    return sample(metrics(url), "rnnserve_requests_in_flight", endpoint=endpoint)


def burst(
    url: str, path: str, bodies: list[Any], headers: dict[str, str] | None = None, timeout: float = 120
) -> list[httpx.Response]:
    """POST every body at once (one connection each), responses in order."""

    async def go() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as c:
            return await asyncio.gather(*(c.post(path, json=b, headers=headers) for b in bodies))

    return asyncio.run(go())


def wait_for(cond: Callable[[], Any], timeout: float = 30, every: float = 0.05, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"{what} not met within {timeout} s")


def log_records(server) -> list[dict[str, Any]]:
    """The server's log as parsed JSON lines; every non-empty line must be JSON."""
    out = []
    for line in server.logs().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise AssertionError(f"log line is not JSON: {line[:300]!r}") from e
    return out


def inference_workers(pid: int) -> list[int]:
    """The server's inference worker processes (spawned: `spawn_main` in their command line), in
    the order they started: LitServe launches one family after the other, sentiment first."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    workers = []
    for c in children:
        try:
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes():
                start = int(Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1].split()[19])
                workers.append((start, c))
        except (OSError, IndexError, ValueError):
            continue
    return [c for _, c in sorted(workers)]


@contextlib.contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """The processes stopped (SIGSTOP) for the block, resumed (SIGCONT) after it, whatever happens."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
