"""Soak test (`make soak`): the shipped models under steady load for ten minutes.

1. Start `python -m service` on the models (--models-dir, default models/).
2. Measure capacity: a closed loop (--concurrency callers, one real text per request: IMDB test
   reviews for sentiment, Multi30k test sentences for translation, beam 5) for --capacity-seconds
   after a short warm-up, per endpoint served.
3. Soak: an open loop at --fraction (0.7) of that capacity, split evenly between the endpoints,
   for --duration seconds (600) after --warmup seconds at the same rate that are not measured.
   Latency counts from each request's scheduled send time (a server falling behind shows as
   latency, not as a slower client). The resident memory of the server's whole process tree
   (VmRSS summed over /proc) is sampled every second.
4. Verdict: zero errors (anything but a 200 with results), resident memory growth under 5%
   (median of the last minute against the median of the first), p99 stable: the last minute's p99
   at most 1.5x the first minute's (or within 10 ms of it).

Prints a per-minute table and the verdict, writes --out (bench/results/soak.json) and a PNG of
latency and RSS over time beside it; exit status 1 when the verdict fails.

The load goes through the load engine (loadgen.engine: a closed loop for the capacity, then one
open-loop level per endpoint side by side) over its raw transport, the least client CPU; an open
loop holding more than 512 requests in flight counts the next ones as "dropped" (errors).

    python -m bench.soak --duration 60       # make soak SOAK_FLAGS="--duration 60"
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench.inputs import default_data_dir, imdb_reviews, multi30k_sentences
from bench.proctree import tree_rss_mb
from bench.server import ROOT, ServerProcess
from loadgen.engine import Level, Request, Requests, run_level
from loadgen.stats import percentile
from loadgen.transport import RawTransport

MAX_RSS_GROWTH, MAX_P99_RATIO, P99_SLACK_MS = 0.05, 1.5, 10.0

Stream = tuple[str, list[bytes], float]  # path, bodies (sent in turn), requests per second


# ---------------------------------------------------------------------------------------------
# Load


def _cycle(path: str, bodies: list[bytes]) -> Requests:
    """The i-th request sends body i, round the list."""
    return lambda i: Request(path, bodies[i % len(bodies)])


async def capacity(url: str, path: str, bodies: list[bytes], concurrency: int, warmup: float, seconds: float) -> float:
    """Requests per second answered by `concurrency` closed-loop callers over `seconds` (after `warmup`)."""
    async with RawTransport(url) as t:
        level = await run_level(
            t, _cycle(path, bodies), Level("closed", concurrency=concurrency), warmup=warmup, duration=seconds
        )
    failed = collections.Counter(s.status for s in level.samples if s.status != "200")
    if failed:
        raise RuntimeError(f"capacity run: {sum(failed.values())} of {len(level.samples)} requests failed: {failed}")
    return len(level.samples) / seconds


async def soak(
    url: str, pid: int, streams: dict[str, Stream], warmup: float, duration: float, progress: bool
) -> dict[str, Any]:
    """Open loop: for each endpoint, requests at its rate for warmup + duration seconds; the
    server's resident memory every second."""
    loop = asyncio.get_running_loop()
    levels = {ep: Level("open", rate=rate) for ep, (_, _, rate) in streams.items()}
    t0 = loop.time()
    t_measure, t_end = t0 + warmup, t0 + warmup + duration
    rss: list[tuple[float, float]] = []

    async def sample_memory() -> None:
        while loop.time() < t_end:
            now = loop.time()
            if now >= t_measure:
                rss.append((now - t_measure, tree_rss_mb(pid)))
            if progress and now >= t_measure and int(now - t_measure) % 30 == 0 and rss:
                done = [s for lv in levels.values() for s in lv.samples]
                errors = sum(1 for s in done if s.status != "200")
                print(
                    f"  {now - t_measure:5.0f} s  {len(done)} requests  {errors} errors  RSS {rss[-1][1]:.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
            await asyncio.sleep(1.0 - (loop.time() - t0) % 1.0)

    async with RawTransport(url) as t:
        await asyncio.gather(
            sample_memory(),
            *(
                run_level(t, _cycle(path, bodies), levels[ep], warmup=warmup, duration=duration)
                for ep, (path, bodies, _) in streams.items()
            ),
        )
    # endpoint, scheduled send (s since measuring began), latency s, status
    samples = [(ep, s.start, s.latency, s.status) for ep, lv in levels.items() for s in lv.samples]
    return {"samples": samples, "rss": rss}


# ---------------------------------------------------------------------------------------------
# Report


def minutes(samples: list[tuple], rss: list[tuple[float, float]], duration: float) -> list[dict[str, Any]]:
    rows = []
    for m in range(math.ceil(duration / 60)):
        lo, hi = 60 * m, min(60 * (m + 1), duration)
        ss = [s for s in samples if lo <= s[1] < hi]
        ok = [s[2] * 1000 for s in ss if s[3] == "200"]
        mem = [r for t, r in rss if lo <= t < hi]
        row = {
            "minute": m + 1,
            "requests": len(ss),
            "req_per_s": round(len(ss) / (hi - lo), 1),
            "errors": len(ss) - len(ok),
            "p50_ms": round(percentile(ok, 50), 1),
            "p99_ms": round(percentile(ok, 99), 1),
            "max_ms": round(max(ok), 1) if ok else None,
            "rss_mb_median": round(percentile(mem, 50), 1),
            "rss_mb_max": round(max(mem), 1) if mem else None,
        }
        for endpoint in sorted({s[0] for s in samples}):
            row[f"{endpoint}_p99_ms"] = round(
                percentile([s[2] * 1000 for s in ss if s[0] == endpoint and s[3] == "200"], 99), 1
            )
        rows.append(row)
    return rows


def verdict(rows: list[dict[str, Any]], samples: list[tuple]) -> dict[str, Any]:
    """Errors, memory growth (first vs last minute) and, per endpoint, p99 first vs last minute."""
    first, last = rows[0], rows[-1]
    errors = collections.Counter(s[3] for s in samples if s[3] != "200")
    growth = (last["rss_mb_median"] - first["rss_mb_median"]) / first["rss_mb_median"]
    checks = {"zero_errors": not errors, "rss_growth_under_5pct": growth < MAX_RSS_GROWTH}
    p99 = {}
    for endpoint in sorted({s[0] for s in samples}):
        a, b = first[f"{endpoint}_p99_ms"], last[f"{endpoint}_p99_ms"]
        p99[endpoint] = {"first_minute_ms": a, "last_minute_ms": b, "ratio": round(b / a, 3)}
        checks[f"{endpoint}_p99_stable"] = b / a <= MAX_P99_RATIO or b - a <= P99_SLACK_MS
    return {
        "errors": dict(errors),
        "rss_first_minute_mb": first["rss_mb_median"],
        "rss_last_minute_mb": last["rss_mb_median"],
        "rss_growth": round(growth, 4),
        "p99": p99,
        "checks": checks,
        "pass": all(checks.values()),
    }


def plot(
    samples: list[tuple], rss: list[tuple[float, float]], rows: list[dict[str, Any]], path: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    for endpoint, (light, dark) in zip(
        sorted({s[0] for s in samples}), [("tab:blue", "navy"), ("tab:orange", "darkred")]
    ):
        ok = [(s[1], s[2] * 1000) for s in samples if s[0] == endpoint and s[3] == "200"]
        ax1.scatter(
            [t for t, _ in ok], [v for _, v in ok], s=1, alpha=0.12, color=light, label=f"{endpoint} (each request)"
        )
        per_10s = collections.defaultdict(list)
        for t, v in ok:
            per_10s[int(t // 10)].append(v)
        xs = sorted(per_10s)
        ax1.plot(
            [10 * x + 5 for x in xs],
            [percentile(per_10s[x], 99) for x in xs],
            lw=1.8,
            color=dark,
            label=f"{endpoint} p99 per 10 s",
        )
        ax1.plot(
            [10 * x + 5 for x in xs],
            [percentile(per_10s[x], 50) for x in xs],
            lw=1.5,
            ls="--",
            color=dark,
            label=f"{endpoint} p50 per 10 s",
        )
    bad = [s[1] for s in samples if s[3] != "200"]
    if bad:
        ax1.scatter(bad, [0] * len(bad), marker="x", color="red", label="errors")
    ax1.set_yscale("log")
    ax1.set_ylabel("latency (ms, from scheduled send)")
    ax1.legend(loc="upper right", fontsize=8, markerscale=8)
    ax1.grid(alpha=0.3)
    ax2.plot([t for t, _ in rss], [r for _, r in rss], lw=1)
    ax2.set_ylabel("server RSS, process tree (MB)")
    ax2.set_xlabel("seconds into the soak")
    lo = min(r for _, r in rss)
    ax2.set_ylim(lo * 0.9, max(r for _, r in rss) * 1.05)
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models-dir", type=Path, default=ROOT / "models")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--duration", type=float, default=600, help="measured seconds (default 600)")
    p.add_argument("--warmup", type=float, default=10, help="seconds at the soak rate before measuring")
    p.add_argument("--fraction", type=float, default=0.7, help="share of the measured capacity to offer")
    p.add_argument("--capacity-seconds", type=float, default=30)
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop callers for the capacity run")
    p.add_argument("--server-args", default="--device cpu", help="extra flags for python -m service")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    pairs = sorted(
        d.name.removeprefix("translate-")
        for d in args.models_dir.glob("translate-*")
        if (d / "metadata.json").is_file()
    )
    endpoints: dict[str, tuple[str, list[bytes]]] = {}
    if (args.models_dir / "sentiment" / "metadata.json").is_file():
        endpoints["sentiment"] = (
            "/v1/sentiment",
            [json.dumps({"texts": [t]}).encode() for t in imdb_reviews(data_dir, 2000, seed=0)],
        )
    if pairs:
        src, tgt = pairs[0].split("-")
        endpoints["translate"] = (
            "/v1/translate",
            [
                json.dumps({"texts": [t], "source_lang": src, "target_lang": tgt, "beam_size": 5}).encode()
                for t in multi30k_sentences(data_dir, src, 1000)
            ],
        )
    if not endpoints:
        print(f"no model artifacts under {args.models_dir}", file=sys.stderr)
        return 2

    log_dir = args.out.parent
    srv = ServerProcess(args.models_dir, args.server_args.split(), log_dir, "soak")
    try:
        t = time.monotonic()
        srv.wait_healthy()
        print(f"server healthy after {time.monotonic() - t:.1f} s (port {srv.port}); endpoints: {', '.join(endpoints)}")
        caps = {}
        for ep, (path, bodies) in endpoints.items():
            caps[ep] = asyncio.run(capacity(srv.url, path, bodies, args.concurrency, 5, args.capacity_seconds))
            print(
                f"capacity {ep}: {caps[ep]:.1f} req/s (closed loop, {args.concurrency} callers, {args.capacity_seconds:g} s)"
            )
        share = args.fraction / len(endpoints)
        streams = {ep: (path, bodies, share * caps[ep]) for ep, (path, bodies) in endpoints.items()}
        print(
            "soak: "
            + ", ".join(f"{ep} at {r:.1f} req/s" for ep, (_, _, r) in streams.items())
            + f" ({args.fraction:.0%} of capacity) for {args.duration:g} s after {args.warmup:g} s of warm-up"
        )
        t_start = time.time()
        res = asyncio.run(soak(srv.url, srv.proc.pid, streams, args.warmup, args.duration, not args.quiet))
        alive = srv.proc.poll() is None
    finally:
        srv.stop()
        if srv.log_path.stat().st_size == 0:  # --log-level warning: a log only when something went wrong
            srv.log_path.unlink()

    samples, rss = res["samples"], res["rss"]
    rows = minutes(samples, rss, args.duration)
    v = verdict(rows, samples)
    if not alive:
        v["checks"]["server_alive"] = v["pass"] = False
    print("\nminute  requests  req/s  errors   p50 ms   p99 ms   max ms   RSS MB (median / max)")
    for r in rows:
        print(
            f"{r['minute']:6d}  {r['requests']:8d}  {r['req_per_s']:5.1f}  {r['errors']:6d}  {r['p50_ms']:7.1f}  "
            f"{r['p99_ms']:7.1f}  {r['max_ms']:7.1f}   {r['rss_mb_median']:.1f} / {r['rss_mb_max']:.1f}"
        )
    total = len(samples)
    print(
        f"\n{total} requests, errors: {v['errors'] or 'none'}; RSS {v['rss_first_minute_mb']:.1f} MB (first minute) -> "
        f"{v['rss_last_minute_mb']:.1f} MB (last minute), growth {v['rss_growth']:+.2%}"
    )
    for ep, q in v["p99"].items():
        print(
            f"{ep} p99: {q['first_minute_ms']:.1f} ms (first minute) -> {q['last_minute_ms']:.1f} ms (last minute), "
            f"ratio {q['ratio']:.2f}"
        )
    print(
        "verdict: "
        + ", ".join(f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in v["checks"].items())
        + f" -> {'PASS' if v['pass'] else 'FAIL'}"
    )

    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "models_dir": str(args.models_dir),
        "server_args": args.server_args,
        "host": platform.node(),
        "python": platform.python_version(),
        "capacity_req_per_s": {k: round(c, 2) for k, c in caps.items()},
        "offered_req_per_s": {ep: round(r, 2) for ep, (_, _, r) in streams.items()},
        "fraction": args.fraction,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "requests": total,
        "minutes": rows,
        "verdict": v,
        "rss_mb_per_second": [[round(t, 1), round(r, 1)] for t, r in rss],
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"report: {args.out}")
    try:
        png = args.out.with_suffix(".png")
        plot(
            samples,
            rss,
            rows,
            png,
            f"soak: {', '.join(f'{ep} {r:.0f} req/s' for ep, (_, _, r) in streams.items())}, "
            f"{args.duration / 60:g} min",
        )
        print(f"plot: {png}")
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    return 0 if v["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
