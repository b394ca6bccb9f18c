"""loadgen/report.py: a level's summary (percentiles, errors by status, throughput) and the SLO verdict."""

from __future__ import annotations

import pytest

from loadgen.engine import Level, Sample
from loadgen.report import format_run, summarize, verdict


def test_summary_percentiles_errors_and_slo():
    lv = Level("closed", concurrency=4, elapsed=2.0)
    lv.samples = [Sample(i * 0.02, (i + 1) / 1000, "200", 2) for i in range(100)]  # 1..100 ms
    lv.samples += [Sample(1.0, 0.001, "429", 0), Sample(1.1, 0.001, "429", 0), Sample(1.2, 5.0, "timeout", 0)]
    r = summarize(lv, slo_p99_ms=50, slo_max_error_rate=0.01)
    assert (r["requests"], r["ok"]) == (103, 100)
    assert r["errors"] == {"429": 2, "timeout": 1}
    assert r["throughput_rps"] == 50.0 and r["texts_per_s"] == 100.0
    lat = r["latency_ms"]
    assert lat["min"] == 1.0 and lat["max"] == 100.0
    assert lat["p50"] == pytest.approx(50.5) and lat["p99"] == pytest.approx(99.01)
    assert not r["slo"]["pass"] and len(r["slo"]["reasons"]) == 2  # p99 and error rate

    good = summarize(lv, slo_p99_ms=200, slo_max_error_rate=0.05)
    assert good["slo"]["pass"]
    v = verdict([r, good], 200)
    assert v["pass"] is False and v["levels_within_slo"] == ["c=4"]
    assert verdict([good], None) is None


def test_format_run_says_what_a_reader_needs():
    lv = Level("open", rate=10, elapsed=1.0)
    lv.samples = [Sample(0.1 * i, 0.02, "200", 1) for i in range(9)] + [Sample(0.95, 0.0, "dropped", 0)]
    r = summarize(lv, slo_p99_ms=None, slo_max_error_rate=0.01, warmup_s=0.0)
    r["client_cpu_share"] = 0.95
    text = format_run(r, "httpx")
    assert "open loop 10 req/s: 10 requests in 1.0 s, 9.0 req/s" in text
    assert "errors: dropped: 1" in text and "SLO" not in text
    assert "may be the bottleneck (--transport raw takes less)" in text
    assert "--transport raw" not in format_run(r, "raw")
