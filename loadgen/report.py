"""A load run's report: each level summarized (throughput, latency, errors, the server's view,
an SLO verdict), the verdict over all levels, and the text `python -m loadgen` prints.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from loadgen.engine import Level
from loadgen.stats import latency_summary


def summarize(
    level: Level, slo_p99_ms: float | None, slo_max_error_rate: float, warmup_s: float = 0.0
) -> dict[str, Any]:
    ok = level.ok()
    n = len(level.samples)
    errors = Counter(s.status for s in level.samples if s.status != "200")
    elapsed = level.elapsed or float("nan")
    lat = latency_summary([s.latency for s in ok])
    out: dict[str, Any] = {
        "mode": level.mode,
        "concurrency": level.concurrency,
        "rate": level.rate,
        "label": level.label,
        "duration_s": round(level.elapsed, 3),
        "requests": n,
        "ok": len(ok),
        "errors": dict(sorted(errors.items())),
        "error_rate": round(1 - len(ok) / n, 4) if n else None,
        "throughput_rps": round(len(ok) / elapsed, 2) if ok else 0.0,
        "texts_per_s": round(sum(s.texts for s in ok) / elapsed, 2) if ok else 0.0,
        "latency_ms": lat,
        "server": level.server,
        # CPU share this client used over the level (warm-up included); near 1.0 the client, not the
        # server, may be what limits throughput and inflates latency
        "client_cpu_share": round(level.client_cpu / (warmup_s + level.elapsed), 3) if level.elapsed else None,
    }
    if slo_p99_ms is not None:
        reasons = []
        if lat is None:
            reasons.append("no successful request")
        elif lat["p99"] > slo_p99_ms:
            reasons.append(f"p99 {lat['p99']:.1f} ms > {slo_p99_ms:g} ms")
        if n and 1 - len(ok) / n > slo_max_error_rate:
            reasons.append(f"error rate {1 - len(ok) / n:.2%} > {slo_max_error_rate:.2%}")
        out["slo"] = {
            "p99_ms": slo_p99_ms,
            "max_error_rate": slo_max_error_rate,
            "pass": not reasons,
            "reasons": reasons,
        }
    return out


def verdict(runs: list[dict[str, Any]], slo_p99_ms: float | None) -> dict[str, Any] | None:
    if slo_p99_ms is None:
        return None
    passing = [r for r in runs if r["slo"]["pass"]]
    best = max(passing, key=lambda r: r["throughput_rps"], default=None)
    return {
        "slo_p99_ms": slo_p99_ms,
        "pass": len(passing) == len(runs),
        "levels_within_slo": [r["label"] for r in passing],
        "best_within_slo": None if best is None else {"label": best["label"], "throughput_rps": best["throughput_rps"]},
    }


def format_run(r: dict[str, Any], transport: str | None = None) -> str:
    """A level's summary as `python -m loadgen` prints it; `transport` adds a hint to a busy client's note."""
    lat = r["latency_ms"]
    lat_s = (
        "no successful request"
        if lat is None
        else "  ".join(f"{k} {lat[k]:.1f}" for k in ("p50", "p90", "p95", "p99", "max"))
    )
    errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
    slo = ""
    if "slo" in r:
        slo = f"\n    SLO p99 <= {r['slo']['p99_ms']:g} ms: " + (
            "PASS" if r["slo"]["pass"] else "FAIL (" + "; ".join(r["slo"]["reasons"]) + ")"
        )
    srv = r.get("server") or {}
    srv_s = "" if not srv else "\n    server: " + ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in srv.items())
    if (r.get("client_cpu_share") or 0) > 0.8:
        srv_s += f"\n    note: this client used {r['client_cpu_share']:.0%} of a core; it may be the bottleneck" + (
            " (--transport raw takes less)" if transport == "httpx" else ""
        )
    return (
        f"  {r['mode']} loop {r['label']}: {r['requests']} requests in {r['duration_s']:.1f} s, "
        f"{r['throughput_rps']:.1f} req/s ({r['texts_per_s']:.1f} texts/s)\n"
        f"    latency ms  {lat_s}\n    errors: {errs}{srv_s}{slo}"
    )
