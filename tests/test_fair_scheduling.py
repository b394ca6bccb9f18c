"""Fair scheduling end to end (issue 22, docs/scheduling.md), against the real server with the tiny
test models: one client keeps heavy translations outstanding, another sends small ones, and the
small ones are answered while the heavy ones are still in flight. Ordering, not timing
thresholds: the assertions hold on a slow or a busy machine alike."""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from tests.synthetic import caption

HEAVY_COUNT = 8


def heavy_body(seed: int) -> dict:
    """64 long sentences, beam 8, n-best 8, alignments: the issue's worst case (several units)."""
    rng = random.Random(seed)
    texts = [" and ".join(caption(rng)[0] for _ in range(8))[:900] for _ in range(64)]
    return {
        "texts": texts,
        "target_lang": "de",
        "beam_size": 8,
        "n_best": 8,
        "return_alignments": True,
        "max_length": 200,
    }


def small_body() -> dict:
    return {"texts": ["a man runs in the park"], "target_lang": "de", "beam_size": 1}


@pytest.fixture(scope="module")
def fair_server(start_server):
    return start_server("--max-batch-size", "16")


def test_small_requests_are_answered_while_another_clients_heavy_ones_are_in_flight(fair_server):
    url = fair_server.url
    info = httpx.get(f"{url}/info", timeout=10).json()["scheduling"]
    assert info["policy"] == "fair" and info["unit_ms"] == 250
    assert set(info["cost_model_ms"]) >= {"translate_per_char_beam_ms", "sentiment_per_char_ms"}

    events: list[tuple[float, str, int]] = []  # (time answered, who, status)
    lock = threading.Lock()

    def heavy(i: int) -> None:
        r = httpx.post(f"{url}/v1/translate", json=heavy_body(i), headers={"X-Client-ID": "bulk"}, timeout=300)
        with lock:
            events.append((time.monotonic(), "heavy", r.status_code))

    threads = [threading.Thread(target=heavy, args=(i,)) for i in range(HEAVY_COUNT)]
    for t in threads:
        t.start()
    # wait until the bulk client's requests are all in the server (in flight, none answered yet)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = httpx.get(f"{url}/metrics", timeout=10).text
        line = next(
            (x for x in m.splitlines() if x.startswith('rnnserve_requests_in_flight{endpoint="translate"}')), ""
        )
        if line and float(line.split()[-1]) >= HEAVY_COUNT:
            break
        time.sleep(0.05)
    with lock:
        assert not events, "the heavy requests finished before the test could start; make them heavier"
    small = []
    for _ in range(3):
        r = httpx.post(f"{url}/v1/translate", json=small_body(), headers={"X-Client-ID": "interactive"}, timeout=300)
        small.append(r)
        with lock:
            events.append((time.monotonic(), "small", r.status_code))
    for t in threads:
        t.join()

    assert all(r.status_code == 200 for r in small)
    heavy_status = [s for _, who, s in events if who == "heavy"]
    assert heavy_status == [200] * HEAVY_COUNT
    order = [who for _, who, _ in sorted(events)]
    last_small = max(i for i, who in enumerate(order) if who == "small")
    heavy_before = order[:last_small].count("heavy")
    # first come first served, the small ones would wait for (nearly) all the heavy work queued
    # before them; here they overtake it: most heavy requests are still in flight
    assert heavy_before <= HEAVY_COUNT // 2, order
    # each heavy request was cut into units and its answer put back together in order
    r = httpx.post(f"{url}/v1/translate", json=heavy_body(99), timeout=300).json()
    assert len(r["results"]) == 64 and all(len(x["alternatives"]) == 7 for x in r["results"])

    m = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'rnnserve_served_cost_seconds_total{client_class="identified",endpoint="translate"}' in m
    assert 'rnnserve_scheduler_wait_seconds_count{client_class="identified",endpoint="translate"}' in m


def test_a_client_over_its_share_gets_429_while_another_is_served(start_server):
    s = start_server("--queue-cost", "3", "--max-batch-size", "16")
    url = s.url
    statuses: list[int] = []
    retry_after: list[str] = []
    lock = threading.Lock()

    def heavy(i: int) -> None:
        r = httpx.post(f"{url}/v1/translate", json=heavy_body(i), headers={"X-Client-ID": "bulk"}, timeout=300)
        with lock:
            statuses.append(r.status_code)
            if r.status_code == 429:
                retry_after.append(r.headers.get("retry-after", ""))

    threads = [threading.Thread(target=heavy, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    small = httpx.post(f"{url}/v1/translate", json=small_body(), headers={"X-Client-ID": "interactive"}, timeout=300)
    for t in threads:
        t.join()
    assert small.status_code == 200
    assert 429 in statuses and 200 in statuses, statuses
    assert all(v.isdigit() and int(v) >= 1 for v in retry_after)
    m = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'rnnserve_requests_rejected_total{endpoint="translate",reason="over_share"}' in m
