"""The numbers a load run reports: latency percentiles, and the server's side from its /metrics.

`percentile` is the one percentile function of the load generator and the benchmarks (linear
interpolation between the closest ranks, numpy's default); `latency_summary` gives the fixed set
every report shows. `endpoint_totals` reads one endpoint's histogram sums and counts and token
counters from a /metrics text; `server_view` turns two such readings, taken as a measured window
opens and closes, into means over the window (batch size, queue wait, inference time, tokens/s).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99)

Totals = dict[str, float]  # series name -> value, for one endpoint, from /metrics
HISTOGRAMS = {  # report key -> histogram in service/metrics.py (mean over the window = d(sum) / d(count))
    "mean_request_ms": "rnnserve_request_duration_seconds",
    "mean_batch_size": "rnnserve_batch_size_requests",
    "mean_texts_per_batch": "rnnserve_batch_size_texts",
    "mean_queue_wait_ms": "rnnserve_queue_wait_seconds",
    "mean_inference_ms": "rnnserve_inference_duration_seconds",
}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of values, NaN when there are none."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=float), q))


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float] | None:
    """min, mean, p50, p90, p95, p99 and max in milliseconds (2 decimals); None without latencies."""
    if len(latencies_s) == 0:
        return None
    a = np.asarray(latencies_s, dtype=float) * 1000
    out = {"min": float(a.min()), "mean": float(a.mean())}
    out |= {f"p{p}": v for p, v in zip(PERCENTILES, map(float, np.percentile(a, PERCENTILES)))}
    out["max"] = float(a.max())
    return {k: round(v, 2) for k, v in out.items()}


def endpoint_totals(exposition: str, endpoint: str) -> Totals:
    """Histogram sums and counts, and token counters, of one endpoint in a /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Totals = {}
    for fam in text_string_to_metric_families(exposition):
        for smp in fam.samples:
            if smp.labels.get("endpoint") != endpoint:
                continue
            if smp.name.endswith(("_sum", "_count")):
                out[smp.name] = out.get(smp.name, 0.0) + smp.value
            elif smp.name == "rnnserve_tokens_total":
                key = f"tokens_{smp.labels.get('kind', 'all')}"
                out[key] = out.get(key, 0.0) + smp.value
    return out


def server_view(before: Totals, after: Totals, elapsed: float) -> dict[str, float] | None:
    """The server's side of a measured window: batching, queue wait, inference time, tokens/s."""
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    out: dict[str, float] = {}
    for key, name in HISTOGRAMS.items():
        if d.get(f"{name}_count", 0) > 0:
            mean = d[f"{name}_sum"] / d[f"{name}_count"]
            out[key] = round(mean * 1000 if key.endswith("_ms") else mean, 2)
    for k, v in d.items():
        if k.startswith("tokens_") and elapsed > 0:
            out[f"{k}_per_s"] = round(v / elapsed, 1)
    return out or None
