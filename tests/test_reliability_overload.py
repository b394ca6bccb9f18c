"""Overload: measure what the server can serve, then send a burst of ten times that (and at least
200 requests) all at once, each with a 0.5 MB body. Every request gets 200 (with its own, correct
results), 429 with Retry-After, or 504; nothing else, no dropped connection. The server's resident
memory (its whole process tree) stays bounded during and after the burst, and right afterwards it
answers correctly again."""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.proctree import tree_rss_mb
from service.runtime.sentiment import SentimentModel
from tests.reliability_http import Load, burst
from tests.service_http import in_flight, metrics, sample, wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory from Linux /proc")

MAX_QUEUE = 16
WORDS = ["great", "awful", "film", "the", "plot", "was", "boring", "moving", "acting", "superb", "and", "a", "dull"]
DISTINCT = 6  # distinct bodies, each checked against the model in-process


def body(i: int) -> bytes:
    """64 reviews of 8,000 characters: 0.5 MB of JSON, about 0.15 s of work for the tiny model."""
    rng = random.Random(i)
    texts = [f"{i}-{k} " + " ".join(rng.choice(WORDS) for _ in range(1700)) for k in range(64)]
    return json.dumps({"texts": [t[:8000] for t in texts]}).encode()


@pytest.fixture(scope="module")
def busy_server(start_server):
    srv = start_server("--max-queue", str(MAX_QUEUE), "--request-timeout", "2", "--max-batch-size", "8")
    yield srv
    srv.stop()


def capacity(url: str, bodies: list[bytes], concurrency: int = 8, seconds: float = 3.0) -> float:
    """Requests per second answered 200 by a closed loop of `concurrency` clients for `seconds`."""

    async def go() -> float:
        done = 0
        stop = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:

            async def client(k: int) -> None:
                nonlocal done
                while time.monotonic() < stop:
                    r = await c.post(
                        "/v1/sentiment", content=bodies[k % len(bodies)], headers={"content-type": "application/json"}
                    )
                    assert r.status_code == 200, r.text[:300]
                    done += 1
                    k += concurrency

            t0 = time.monotonic()
            await asyncio.gather(*(client(k) for k in range(concurrency)))
            return done / (time.monotonic() - t0)

    return asyncio.run(go())


class MemoryWatch(threading.Thread):
    """Samples the server's process-tree RSS every 20 ms until stopped; keeps the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.samples = pid, 0.0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak = max(self.peak, tree_rss_mb(self.pid))
            self.samples += 1
            time.sleep(0.02)


def run_burst(server, bodies: list[bytes], n: int) -> tuple[list[dict], float, float, float]:
    """n requests at once; (records, seconds, peak RSS during, RSS after) of the server's process tree."""
    watch = MemoryWatch(server.proc.pid)
    watch.start()
    t0 = time.monotonic()
    records = burst(server.url, "/v1/sentiment", [bodies[i % len(bodies)] for i in range(n)])
    took = time.monotonic() - t0
    watch.halt.set()
    watch.join()
    return records, took, watch.peak, tree_rss_mb(server.proc.pid)


def check_records(records: list[dict], expected: list[np.ndarray], labels: list[str]) -> Counter[str]:
    """Only 200 (each with its own request's results), 429 with Retry-After, or 504."""
    counts = Counter(rec["outcome"] for rec in records)
    assert set(counts) <= {"200", "429", "504"}, counts
    for i, rec in enumerate(records):
        resp = rec["response"]
        assert resp.headers["x-request-id"] == rec["id"]
        if rec["outcome"] == "429":
            assert int(resp.headers["retry-after"]) >= 1
            assert "server busy" in resp.json()["detail"]
        elif rec["outcome"] == "504":
            assert "retry later" in resp.json()["detail"]
        else:
            got = [[x["probabilities"][k] for k in labels] for x in resp.json()["results"]]
            np.testing.assert_allclose(got, expected[i % len(expected)], atol=1e-5)
    return counts


def test_burst_of_ten_times_capacity(busy_server, models_dir):
    url = busy_server.url
    bodies = [body(i) for i in range(DISTINCT)]
    model = SentimentModel(models_dir / "sentiment")
    expected = [model.predict(json.loads(b)["texts"]) for b in bodies]

    cap = capacity(url, bodies)  # also warms the server up to this request size
    n = max(200, math.ceil(10 * cap))
    before = tree_rss_mb(busy_server.proc.pid)
    m0 = metrics(url)
    records, took, peak, after = run_burst(busy_server, bodies, n)

    # Right afterwards: healthy, nothing in flight, and a request is answered correctly.
    r = httpx.post(f"{url}/v1/sentiment", content=bodies[0], headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 200, r.text[:300]
    np.testing.assert_allclose(
        [[x["probabilities"][k] for k in model.labels] for x in r.json()["results"]], expected[0], atol=1e-5
    )
    assert httpx.get(f"{url}/health").status_code == 200
    m1 = metrics(url)

    counts = check_records(records, expected, model.labels)
    print(
        f"\ncapacity {cap:.1f} req/s; burst of {n} requests ({n / cap:.0f}x capacity) of {len(bodies[0]) / 1e6:.2f} MB "
        f"answered in {took:.1f} s: {dict(counts)}; server RSS {before:.0f} MB before, peak {peak:.0f} MB, "
        f"{after:.0f} MB after"
    )
    assert n >= 10 * cap
    assert counts["429"] > 0 and counts["200"] > 0, counts  # refused beyond the queue, served within it

    # The server counted what the client saw.
    def delta(name: str, **labels: str) -> float:
        return sample(m1, name, **labels) - sample(m0, name, **labels)

    assert delta("rnnserve_requests_rejected_total", endpoint="sentiment", reason="queue_full") == counts["429"]
    assert delta("rnnserve_requests_total", endpoint="sentiment", status="429") == counts["429"]
    assert delta("rnnserve_requests_total", endpoint="sentiment", status="200") == counts["200"] + 1
    assert sample(m1, "rnnserve_requests_in_flight", endpoint="sentiment") == 0

    # The same burst again: nothing piles up from one to the next.
    records2, took2, peak2, after2 = run_burst(busy_server, bodies, n)
    counts2 = check_records(records2, expected, model.labels)
    print(f"second burst in {took2:.1f} s: {dict(counts2)}; peak {peak2:.0f} MB, {after2:.0f} MB after")
    # Memory: the server holds at most the queue's worth of requests (16 bodies of 0.5 MB, parsed
    # and pickled to the worker: tens of MB, plus what the allocator keeps) while each burst
    # offers n x 0.5 MB (100 MB and more).
    assert max(peak, peak2) - before < 150, (before, peak, peak2)
    assert after2 - before < 150, (before, after, after2)


def test_requests_still_uploading_hold_their_place_in_the_queue(busy_server):
    """The queue bound counts a request from the moment it is accepted, before its body is read:
    with every slot taken by slow uploads, the next request is refused (429) instead of being
    buffered too, and the uploads, once complete, are answered."""
    release = threading.Event()

    def slow_body():
        yield b'{"texts": ["a slow'
        release.wait(60)
        yield b' upload"]}'

    results: list[httpx.Response] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                httpx.post(
                    f"{busy_server.url}/v1/sentiment",
                    content=slow_body(),
                    headers={"content-type": "application/json"},
                    timeout=90,
                )
            )
        )
        for _ in range(MAX_QUEUE)
    ]
    for t in threads:
        t.start()
    try:
        wait_for(
            lambda: in_flight(busy_server.url, "sentiment") >= MAX_QUEUE,
            timeout=30,
            what="every slot taken by an upload",
        )
        r = httpx.post(f"{busy_server.url}/v1/sentiment", json={"texts": ["fine"]}, timeout=30)
        assert r.status_code == 429 and r.headers["retry-after"], r.text
    finally:
        release.set()
        for t in threads:
            t.join(60)
    assert [r.status_code for r in results] == [200] * MAX_QUEUE
    assert httpx.post(f"{busy_server.url}/v1/sentiment", json={"texts": ["fine"]}).status_code == 200


def test_overload_is_over_at_once(busy_server):
    """A second burst, of small requests this time: same rules; no 504 left over from the first."""
    load = Load(busy_server.url)

    async def go() -> None:
        async with load.client(400) as c:
            await asyncio.gather(
                *(load.send(c, "/v1/sentiment", {"texts": [f"fine film {i}"]}, f"s{i}") for i in range(400))
            )

    asyncio.run(go())
    counts = load.counts()
    assert set(counts) <= {"200", "429", "504"} and counts["200"] > 0, counts
    assert httpx.post(f"{busy_server.url}/v1/sentiment", json={"texts": ["ok"]}).status_code == 200
