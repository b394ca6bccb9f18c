"""loadgen/engine.py: load levels against the real server (which requests go out, what is
measured, the server's view), and how every outcome is counted."""

from __future__ import annotations

import asyncio
import json

import pytest

from loadgen.engine import Level, Request, Sample, outcome, run_level
from loadgen.stats import endpoint_totals
from loadgen.transport import RawTransport, Reply, make_transport

BODIES = [json.dumps({"texts": [f"A fine film, number {i}."]}).encode() for i in range(24)]


@pytest.mark.parametrize("kind", ["httpx", "raw"])
def test_closed_loop_sends_each_request_once(server, kind):
    """What bench/serving.py relies on: no time limit, max_requests = len(bodies), index i -> body i."""
    seen: list[int] = []

    def requests(i: int) -> Request:
        seen.append(i)
        return Request("/v1/sentiment", BODIES[i])

    async def go() -> Level:
        async with make_transport(kind, server.url) as t:
            return await run_level(
                t, requests, Level("closed", concurrency=4), warmup=0, duration=None, max_requests=len(BODIES)
            )

    level = asyncio.run(go())
    assert sorted(seen) == list(range(len(BODIES)))
    assert [s.status for s in level.samples] == ["200"] * len(BODIES)
    assert all(s.texts == 1 and s.latency > 0 and s.start >= 0 for s in level.samples)
    assert 0 < level.elapsed >= max(s.latency for s in level.samples)


def test_warmup_is_sent_but_not_measured_and_the_server_view_covers_the_window(server):
    seen: list[int] = []

    def requests(i: int) -> Request:
        seen.append(i)
        return Request("/v1/sentiment", BODIES[i % len(BODIES)])

    async def go() -> Level:
        async with RawTransport(server.url) as t:

            async def snapshot() -> dict[str, float]:
                return endpoint_totals((await t.request("GET", "/metrics")).body.decode(), "sentiment")

            return await run_level(
                t, requests, Level("closed", concurrency=2), warmup=0.5, duration=1.0, snapshot=snapshot
            )

    level = asyncio.run(go())
    assert len(seen) > len(level.samples) > 0  # the warm-up's requests are not in the samples
    assert seen == list(range(len(seen)))  # indices in the order they were sent, warm-up first
    assert all(0 <= s.start < 1.0 for s in level.samples)
    assert 1.0 <= level.elapsed < 3.0
    assert level.server is not None and level.server["mean_batch_size"] >= 1
    assert level.server["mean_inference_ms"] > 0


def test_open_loop_drops_what_it_cannot_hold_and_counts_timeouts():
    """A server that never answers: the first requests time out, the rest are dropped, none queued."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        await asyncio.sleep(5)
        writer.close()

    async def go() -> Level:
        srv = await asyncio.start_server(silent, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        async with srv, RawTransport(url, timeout=0.4) as t:
            return await run_level(
                t,
                lambda i: Request("/v1/sentiment", BODIES[0]),
                Level("open", rate=50),
                warmup=0,
                duration=0.2,
                max_outstanding=2,
            )

    level = asyncio.run(go())
    statuses = [s.status for s in level.samples]
    assert statuses.count("timeout") == 2 and statuses.count("dropped") == len(statuses) - 2 >= 6
    assert level.elapsed >= 0.4  # the window lasts until the last timed-out answer


def test_outcome_of_a_reply():
    assert outcome(Reply(200, b'{"results": [], "model": {}}')) == "200"
    assert outcome(Reply(200, b"{}")) == "bad response"
    assert outcome(Reply(429, b'{"detail": "busy"}')) == "429"


def test_a_level_repr_stays_short():
    lv = Level("open", rate=20, samples=[Sample(0.0, 0.01, "200", 1)] * 10_000, elapsed=2.5)
    assert repr(lv) == "Level(open 20 req/s, 10000 samples, 2.500 s)"
