"""/metrics over HTTP: it parses with prometheus_client's parser, every metric of the service is
there, the counters count what was sent (exactly, with one worker and with several), and a
concurrent burst forms batches larger than one request."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from service.runtime.sentiment import SentimentModel
from tests.service_http import burst, frozen, in_flight, inference_workers, metrics, sample, wait_for

FAMILIES = {  # name -> type
    "rnnserve_requests": "counter",
    "rnnserve_request_duration_seconds": "histogram",
    "rnnserve_requests_in_flight": "gauge",
    "rnnserve_requests_rejected": "counter",
    "rnnserve_queue_wait_seconds": "histogram",
    "rnnserve_inference_duration_seconds": "histogram",
    "rnnserve_batch_size_requests": "histogram",
    "rnnserve_batch_size_texts": "histogram",
    "rnnserve_tokens": "counter",
    "rnnserve_decode_steps": "counter",
    "rnnserve_model_info": "gauge",
}
REVIEWS = ["A wonderful, superb film.", "Awful and boring.", "It was fine, really.", "Brilliant acting, dull plot."]


def family_types(url: str) -> dict[str, str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f.type for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)}


def test_every_metric_is_exposed_with_its_type(server):
    httpx.post(f"{server.url}/v1/sentiment", json={"texts": ["fine"]})
    httpx.post(f"{server.url}/v1/translate", json={"texts": ["A dog."], "target_lang": "de"})
    httpx.post(f"{server.url}/v1/sentiment", content=b"x", headers={"content-type": "text/plain"})
    big = httpx.post(
        f"{server.url}/v1/sentiment", content=b" " * 2_100_000, headers={"content-type": "application/json"}
    )
    assert big.status_code == 413  # a rejection, so that the labelled rejection counter has a sample
    types = family_types(server.url)
    for name, kind in FAMILIES.items():
        assert types.get(name) == kind, (name, types.get(name))


def test_counters_count_what_was_sent(server, models_dir):
    before = metrics(server.url)
    sm = SentimentModel(models_dir / "sentiment")
    for i in range(3):
        assert httpx.post(f"{server.url}/v1/sentiment", json={"texts": REVIEWS[: i + 1]}).status_code == 200
    assert httpx.post(f"{server.url}/v1/sentiment", json={"texts": [""]}).status_code == 422
    r = httpx.post(f"{server.url}/v1/translate", json={"texts": ["A dog runs.", "A man sits."], "target_lang": "de"})
    assert r.status_code == 200
    after = metrics(server.url)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("rnnserve_requests_total", endpoint="sentiment", status="200") == 3
    assert delta("rnnserve_requests_total", endpoint="sentiment", status="422") == 1
    assert delta("rnnserve_requests_total", endpoint="translate", status="200") == 1
    assert delta("rnnserve_request_duration_seconds_count", endpoint="sentiment") == 4
    assert delta("rnnserve_request_duration_seconds_sum", endpoint="sentiment") > 0
    # Worker-side: 3 sentiment requests (6 texts), tokens exactly as the tokenizer counts them.
    assert delta("rnnserve_batch_size_requests_sum", endpoint="sentiment") == 3
    assert delta("rnnserve_batch_size_texts_sum", endpoint="sentiment") == 1 + 2 + 3
    assert delta("rnnserve_queue_wait_seconds_count", endpoint="sentiment") == 3
    assert delta("rnnserve_inference_duration_seconds_count", endpoint="sentiment") >= 1
    tokens = sum(sm.encode(REVIEWS[: i + 1]).tokens for i in range(3))
    assert delta("rnnserve_tokens_total", endpoint="sentiment", kind="input") == tokens
    assert delta("rnnserve_tokens_total", endpoint="translate", kind="input") > 0
    assert delta("rnnserve_tokens_total", endpoint="translate", kind="output") > 0
    assert delta("rnnserve_decode_steps_total", pair="en-de") >= 1
    assert sample(after, "rnnserve_requests_in_flight", endpoint="sentiment") == 0
    # Histogram buckets are cumulative and end with +Inf == count.
    buckets = [
        s
        for s in after["rnnserve_request_duration_seconds"]
        if s.name.endswith("_bucket") and s.labels["endpoint"] == "sentiment" and s.labels["protocol"] == "v1"
    ]
    values = [s.value for s in sorted(buckets, key=lambda s: float(s.labels["le"]))]
    assert values == sorted(values)
    assert values[-1] == sample(after, "rnnserve_request_duration_seconds_count", endpoint="sentiment", protocol="v1")


def test_model_info_names_model_version_and_provider(server, models_dir):
    info = httpx.get(f"{server.url}/info").json()
    fams = metrics(server.url)
    got = {
        (s.labels["model"], s.labels["version"], s.labels["provider"])
        for s in fams["rnnserve_model_info"]
        if s.value == 1
    }
    assert got == {(m["name"], m["version"], "CPUExecutionProvider") for m in info["models"]}
    assert all(s.labels["pid"].isdigit() for s in fams["rnnserve_model_info"])


def _batch_sizes(fams, endpoint: str) -> tuple[float, float, float]:
    """(batches, requests in them, batches of exactly one request)."""
    return (
        sample(fams, "rnnserve_batch_size_requests_count", endpoint=endpoint),
        sample(fams, "rnnserve_batch_size_requests_sum", endpoint=endpoint),
        sample(fams, "rnnserve_batch_size_requests_bucket", endpoint=endpoint, le="1.0"),
    )


@pytest.mark.parametrize("endpoint, body", [("sentiment", {}), ("translate", {"target_lang": "de"})])
def test_concurrent_requests_form_batches_larger_than_one(server, endpoint, body):
    n = 48
    b0 = _batch_sizes(metrics(server.url), endpoint)
    texts = (
        REVIEWS if endpoint == "sentiment" else ["A dog runs in the park.", "A man sits.", "A child plays in the snow."]
    )
    responses = burst(server.url, f"/v1/{endpoint}", [{"texts": [texts[i % len(texts)]], **body} for i in range(n)])
    assert [r.status_code for r in responses] == [200] * n
    b1 = _batch_sizes(metrics(server.url), endpoint)
    batches, requests, singles = (after - before for after, before in zip(b1, b0, strict=True))
    assert requests == n  # every request counted once, in exactly one batch
    assert batches < n and batches - singles >= 1, (batches, singles)  # some batch held more than one request
    assert requests / batches > 1.5
    assert sample(metrics(server.url), "rnnserve_batch_size_requests_bucket", endpoint=endpoint, le="16.0") == sample(
        metrics(server.url), "rnnserve_batch_size_requests_count", endpoint=endpoint
    )  # --max-batch-size 16


# --------------------------------------------------------------------------------------------- several workers


@pytest.fixture(scope="module")
def two_workers(start_server):
    srv = start_server("--workers", "2", "--max-batch-size", "8")
    yield srv
    srv.stop()


def test_metrics_add_up_across_worker_processes(two_workers):
    info = httpx.get(f"{two_workers.url}/info").json()
    assert [m["workers"] for m in info["models"]] == [2, 2]
    assert info["runtime"]["workers_per_family"] == 2
    fams = metrics(two_workers.url)
    pids = {s.labels["pid"] for s in fams["rnnserve_model_info"]}
    assert len(pids) == 4  # two processes per family, each reporting its model
    n_sent, n_tr = 60, 30
    before = metrics(two_workers.url)
    sent = burst(two_workers.url, "/v1/sentiment", [{"texts": [REVIEWS[i % 4]] * (1 + i % 3)} for i in range(n_sent)])
    tr = burst(two_workers.url, "/v1/translate", [{"texts": ["A dog runs."], "target_lang": "de"} for _ in range(n_tr)])
    assert all(r.status_code == 200 for r in sent + tr)
    after = metrics(two_workers.url)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("rnnserve_requests_total", endpoint="sentiment", status="200") == n_sent
    assert delta("rnnserve_requests_total", endpoint="translate", status="200") == n_tr
    # Recorded in the two worker processes, summed by the collector: exact totals.
    assert delta("rnnserve_batch_size_requests_sum", endpoint="sentiment") == n_sent
    assert delta("rnnserve_batch_size_texts_sum", endpoint="sentiment") == sum(1 + i % 3 for i in range(n_sent))
    assert delta("rnnserve_batch_size_requests_sum", endpoint="translate") == n_tr
    assert delta("rnnserve_queue_wait_seconds_count", endpoint="sentiment") == n_sent
    assert sample(after, "rnnserve_requests_in_flight", endpoint="sentiment") == 0


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the worker processes")
def test_with_the_default_window_requests_that_queue_behind_busy_workers_leave_in_batches(two_workers):
    """No batch window (the default): the workers are frozen while 12 requests arrive, as if busy
    with a long batch; thawed, each takes what is queued (at most --max-batch-size 8), so 12
    requests leave in a few batches (two to four, as the two workers race), not twelve."""
    assert httpx.get(f"{two_workers.url}/info").json()["batching"]["batch_timeout_s"] == 0
    workers = inference_workers(two_workers.proc.pid)
    n = 12
    b0 = _batch_sizes(metrics(two_workers.url), "sentiment")
    out: list = []
    with frozen(workers):
        sender = threading.Thread(
            target=lambda: out.extend(
                burst(two_workers.url, "/v1/sentiment", [{"texts": [REVIEWS[i % 4]]} for i in range(n)])
            )
        )
        sender.start()
        wait_for(lambda: in_flight(two_workers.url, "sentiment") >= n, timeout=30, what=f"{n} requests accepted")
        time.sleep(0.5)  # accepted, then put on the queue by the (running) HTTP process
    sender.join(60)
    assert [r.status_code for r in out] == [200] * n
    batches, requests, _ = (a - b for a, b in zip(_batch_sizes(metrics(two_workers.url), "sentiment"), b0, strict=True))
    # Two thawed workers race for the queue and may split it unevenly, but never one request each.
    assert requests == n and batches <= n // 3, (batches, requests)
