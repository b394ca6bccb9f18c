"""loadgen/stats.py: the one percentile function, the latency summary, and the server's view from /metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadgen import stats as lt


def test_server_view_from_two_metrics_snapshots():
    def exposition(n: int, batches: int, wait: float, tokens: int) -> str:
        return (
            f'rnnserve_batch_size_requests_sum{{endpoint="sentiment"}} {n}\n'
            f'rnnserve_batch_size_requests_count{{endpoint="sentiment"}} {batches}\n'
            f'rnnserve_batch_size_requests_count{{endpoint="translate"}} 999\n'
            f'rnnserve_queue_wait_seconds_sum{{endpoint="sentiment"}} {wait}\n'
            f'rnnserve_queue_wait_seconds_count{{endpoint="sentiment"}} {n}\n'
            f'rnnserve_tokens_total{{endpoint="sentiment",kind="input"}} {tokens}\n'
        )

    before = lt.endpoint_totals(exposition(10, 10, 0.5, 1000), "sentiment")
    assert before["rnnserve_batch_size_requests_count"] == 10 and before["tokens_input"] == 1000
    after = lt.endpoint_totals(exposition(110, 35, 2.5, 5000), "sentiment")
    view = lt.server_view(before, after, elapsed=2.0)
    assert view == {"mean_batch_size": 4.0, "mean_queue_wait_ms": 20.0, "tokens_input_per_s": 2000.0}
    assert lt.server_view(after, after, elapsed=2.0) == {"tokens_input_per_s": 0.0}


def test_percentile_interpolates_between_closest_ranks():
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert lt.percentile(values, 0) == 1.0 and lt.percentile(values, 100) == 4.0
    assert lt.percentile(values, 50) == pytest.approx(2.5)
    assert lt.percentile(values, 99) == pytest.approx(3.97)  # 1 + 3 * 0.99 ranks up
    assert lt.percentile([7.0], 99) == 7.0
    assert math.isnan(lt.percentile([], 50))
    rng = np.random.default_rng(0)
    xs = list(rng.exponential(size=1001))
    ranked = sorted(xs)
    assert lt.percentile(xs, 90) == pytest.approx(ranked[900])  # (n - 1) * 0.9 is a whole rank


def test_latency_summary_in_milliseconds():
    s = lt.latency_summary([0.001 * i for i in range(1, 101)])  # 1..100 ms
    assert list(s) == ["min", "mean", "p50", "p90", "p95", "p99", "max"]
    assert (s["min"], s["mean"], s["max"]) == (1.0, 50.5, 100.0)
    assert (s["p50"], s["p90"], s["p99"]) == (50.5, 90.1, 99.01)
    assert lt.latency_summary([]) is None
